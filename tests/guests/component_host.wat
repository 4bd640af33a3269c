;; A component that imports a host function `burn` and calls it from core module
;; Caller's `run`: nearly all the time is in the Python host function.
(component
  (import "burn" (func $burn (param "n" u32)))
  (core func $burn_lowered (canon lower (func $burn)))
  (core module $Caller
    (import "host" "burn" (func $burn (param i32)))
    (func $run (export "run") (param i32) (call $burn (local.get 0))))
  (core instance $caller
    (instantiate $Caller (with "host" (instance (export "burn" (func $burn_lowered))))))
  (func (export "run") (param "n" u32) (canon lift (core func $caller "run"))))
