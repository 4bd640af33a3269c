(module $twin_b
  ;; Same function names as twin_a.wat: the profile must keep them apart.
  (func $work (param $iters i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 5)) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $iters))))
    (local.get $acc))
  (func (export "run") (param $iters i32) (result i32)
    (call $work (local.get $iters))))
