;; Timeline markers: `run` calls a slow host function (env.slow, which sleeps) and
;; a fast one (env.fast) `count` times each, spinning between them; `start` is a
;; start function that spins, so instantiating the module is a guest call too.
(module
  (import "env" "slow" (func $slow))
  (import "env" "fast" (func $fast))
  (func $spin (param $n i32) (local $i i32)
    (loop
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (local.get $n)))))
  (func $start (call $spin (i32.const 2000000)))
  (start $start)
  (func (export "run") (param $count i32) (local $i i32)
    (loop
      (call $slow)
      (call $fast)
      (call $spin (i32.const 100000))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (local.get $count))))))
