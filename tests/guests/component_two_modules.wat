;; A component whose exported `run` is lifted from core module Driver; Driver's
;; `run` calls its own `work` and Leaf's `spin` (imported), each a counting loop of
;; n iterations, so half the guest time is in each core module.
(component
  (core module $Leaf
    (func $spin (export "spin") (param $n i32) (result i32) (local $i i32)
      (loop $again
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (local.get $n))))
      (local.get $i)))
  (core instance $leaf (instantiate $Leaf))
  (core module $Driver
    (import "leaf" "spin" (func $spin (param i32) (result i32)))
    (func $work (param $n i32) (result i32) (local $i i32)
      (loop $again
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $again (i32.lt_u (local.get $i) (local.get $n))))
      (local.get $i))
    (func $run (export "run") (param $n i32) (result i32)
      (i32.add (call $work (local.get $n)) (call $spin (local.get $n)))))
  (core instance $driver (instantiate $Driver (with "leaf" (instance $leaf))))
  (func (export "run") (param "n" u32) (result u32)
    (canon lift (core func $driver "run"))))
