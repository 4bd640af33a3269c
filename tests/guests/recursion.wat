(module $recursion
  ;; rec(n): recurse n frames deep, then spin in a leaf loop, so every sample
  ;; taken in the leaf has the whole chain under it.
  (func $rec (export "rec") (param $n i32) (param $spin i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n))
      (then (call $leaf (local.get $spin)))
      (else (i32.add (i32.const 1)
        (call $rec (i32.sub (local.get $n) (i32.const 1)) (local.get $spin))))))
  (func $leaf (param $iters i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $iters))))
    (local.get $acc)))
