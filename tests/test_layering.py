"""ssd_core is a plain PyTorch library: it must not import the distributed layers."""

import subprocess
import sys

FORBIDDEN = ("ray", "mlflow", "pipeline", "jobs")


def test_ssd_core_imports_no_ray_mlflow_pipeline_or_jobs():
    code = (
        "import pkgutil, importlib, sys, ssd_core\n"
        "for m in pkgutil.walk_packages(ssd_core.__path__, 'ssd_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    offending = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert not offending, f"ssd_core pulled in {offending}"
    assert "ssd_core.loss" in loaded  # the walk did import the package
