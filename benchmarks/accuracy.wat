(module $accuracy
  ;; Parts with known, separately measurable CPU cost.  Each part is reached
  ;; through its own wrapper (part_*), so a part's share in any profile is the
  ;; inclusive time under its wrapper -- comparable across profilers, even one
  ;; that cannot see host frames.
  (import "env" "burn_py" (func $burn_py (param i32)))
  (import "env" "sleep_py" (func $sleep_py (param i32)))
  (import "env" "nop_py" (func $nop_py))

  (func $mix (param $iters i32) (result i32)
    (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 1664525)) (i32.const 1013904223)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $iters))))
    (local.get $acc))

  (func $chain (param $depth i32) (param $iters i32) (result i32)
    (if (result i32) (i32.eqz (local.get $depth))
      (then (call $mix (local.get $iters)))
      (else (i32.add (i32.const 1)
        (call $chain (i32.sub (local.get $depth) (i32.const 1)) (local.get $iters))))))

  (func $part_small (export "part_small") (param $n i32) (result i32) (call $mix (local.get $n)))
  (func $part_large (export "part_large") (param $n i32) (result i32) (call $mix (local.get $n)))
  (func $part_deep (export "part_deep") (param $n i32) (result i32)
    (call $chain (i32.const 60) (local.get $n)))
  (func $part_host_burn (export "part_host_burn") (param $n i32) (result i32)
    (call $burn_py (local.get $n)) (i32.const 0))
  (func $part_host_sleep (export "part_host_sleep") (param $ms i32) (result i32)
    (call $sleep_py (local.get $ms)) (i32.const 0))

  ;; Short host calls in a loop: the CPU is wasmtime-py's crossing each way.
  (func $part_host_short (export "part_host_short") (param $calls i32) (result i32)
    (local $i i32)
    (loop $l
      (call $nop_py)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $calls))))
    (i32.const 0))

  (func (export "run") (param $rounds i32) (param $small i32) (param $large i32) (param $deep i32)
        (param $burn i32) (param $sleep i32) (param $short i32) (result i32)
    (local $r i32) (local $acc i32)
    (loop $outer
      (local.set $acc (i32.add (local.get $acc) (call $part_small (local.get $small))))
      (local.set $acc (i32.add (local.get $acc) (call $part_large (local.get $large))))
      (local.set $acc (i32.add (local.get $acc) (call $part_deep (local.get $deep))))
      (drop (call $part_host_burn (local.get $burn)))
      (drop (call $part_host_sleep (local.get $sleep)))
      (drop (call $part_host_short (local.get $short)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br_if $outer (i32.lt_u (local.get $r) (local.get $rounds))))
    (local.get $acc)))
