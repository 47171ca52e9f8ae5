"""Package-level behaviour: what ``import jnas`` does to the environment."""

import os
import subprocess
import sys


def _xla_flags_after_import(env_flags: str | None) -> str:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  if env_flags is not None:
    env["XLA_FLAGS"] = env_flags
  out = subprocess.run([sys.executable, "-c", "import os, jnas; print(os.environ['XLA_FLAGS'])"],
                       capture_output=True, text=True, env=env, check=True)
  return out.stdout.strip()


def test_import_disables_triton_gemm_for_gpu_and_keeps_user_flags():
  assert _xla_flags_after_import(None) == "--xla_gpu_enable_triton_gemm=false"
  assert _xla_flags_after_import("--xla_force_host_platform_device_count=4") == (
      "--xla_force_host_platform_device_count=4 --xla_gpu_enable_triton_gemm=false")


def test_import_respects_an_explicit_triton_gemm_choice():
  assert _xla_flags_after_import("--xla_gpu_enable_triton_gemm=true") == (
      "--xla_gpu_enable_triton_gemm=true")
