(module $trap
  ;; Works for a while, then traps: the recording up to the trap must survive.
  (func $spin (param $iters i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $iters))))
    (local.get $acc))
  (func (export "run") (param $iters i32) (result i32)
    (drop (call $spin (local.get $iters)))
    unreachable))
