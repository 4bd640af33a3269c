(module $bias
  ;; The epoch-sampling bias of loop-free functions (issue 4, item 4).
  ;; hot case: a loop whose iterations are mostly a loop-free leaf;
  ;; cold case: a loop doing its own work and calling a light loop-free leaf.
  ;; *_base variants are the same loops without the call, so timing both gives
  ;; the leaf's true share (its body and the call itself): (T - T_base) / T.
  (func $leaf_hot (param $x i32) (result i32)
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
    (local.get $x))
  (func $leaf_light (param $x i32) (result i32)
    (i32.add (i32.mul (local.get $x) (i32.const 3)) (i32.const 1)))

  (func $hot (param $n i32) (param $which i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (if (result i32) (local.get $which)
        (then (call $leaf_hot (i32.add (local.get $acc) (local.get $i))))
        (else (i32.add (local.get $acc) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc))

  (func $cold (param $n i32) (param $which i32) (result i32)
    (local $i i32) (local $acc i32) (local $x i32)
    (loop $l
      (local.set $x (i32.add (local.get $acc) (local.get $i)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $acc (if (result i32) (local.get $which)
        (then (call $leaf_light (local.get $x)))
        (else (local.get $x))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc))

  (func (export "hot") (param $n i32) (result i32) (call $hot (local.get $n) (i32.const 1)))
  (func (export "hot_base") (param $n i32) (result i32) (call $hot (local.get $n) (i32.const 0)))
  (func (export "cold") (param $n i32) (result i32) (call $cold (local.get $n) (i32.const 1)))
  (func (export "cold_base") (param $n i32) (result i32) (call $cold (local.get $n) (i32.const 0))))
