"""An unmodified llm-wasm-sandbox application: run one Python and one JavaScript snippet."""
import sys, tempfile
from sandbox import create_sandbox, RuntimeType
root = tempfile.mkdtemp()
py = create_sandbox(runtime=RuntimeType.PYTHON, workspace_root=root)
r = py.execute("total = 0\nfor i in range(200000):\n    total += i * i\nprint(total)")
print("python", r.success, r.stdout.strip(), r.fuel_consumed)
js = create_sandbox(runtime=RuntimeType.JAVASCRIPT, workspace_root=root)
r2 = js.execute("let t = 0; for (let i = 0; i < 300000; i++) { t += i % 7; } console.log(t);")
print("javascript", r2.success, r2.stdout.strip(), r2.fuel_consumed)
sys.exit(0 if r.success and r2.success else 1)
