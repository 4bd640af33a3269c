(module $host
  ;; wasm work interleaved with calls to Python host functions.
  (import "env" "burn" (func $burn (param i32)))
  (import "env" "nap" (func $nap (param i32)))
  (func $spin (param $iters i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $iters))))
    (local.get $acc))
  (func $caller (param $burn i32) (call $burn (local.get $burn)))
  (func (export "run") (param $rounds i32) (param $spin i32) (param $burn i32) (param $nap i32) (result i32)
    (local $r i32) (local $acc i32)
    (loop $outer
      (local.set $acc (i32.add (local.get $acc) (call $spin (local.get $spin))))
      (call $caller (local.get $burn))
      (call $nap (local.get $nap))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br_if $outer (i32.lt_u (local.get $r) (local.get $rounds))))
    (local.get $acc)))
