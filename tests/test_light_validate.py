"""`bench validate` checks a suite from light declarations: no torch.

The subprocess test is the guard: a module that starts importing torch (or transformers, scikit-learn,
MLflow) at import time on the validation path makes it fail. No timing threshold (timings are noisy).
"""
import subprocess
import sys
import textwrap

import pytest

from bench import registry
from bench.suite import REPO_ROOT

HEAVY = ("torch", "torchvision", "transformers", "peft", "sklearn", "scipy", "mlflow", "lm_eval", "torch_fidelity")

_PROBE = textwrap.dedent("""
    import sys
    from bench.cli import main

    for suite in sys.argv[1:]:
        try:
            main(["validate", suite], standalone_mode=False)
        except SystemExit as e:
            if e.code:
                print(f"EXIT {e.code}: {suite}")
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[0].split(",")))
    print("HEAVY:" + ",".join(heavy))
""")


def test_validate_imports_no_torch():
    suites = sorted(str(p) for p in (REPO_ROOT / "suites").glob("*.yaml"))
    assert len(suites) >= 5
    out = subprocess.run([sys.executable, "-c", _PROBE.replace("sys.argv[0]", repr(",".join(HEAVY))), *suites],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # suites whose data or model a user provides fail fast (exit 2) when it is absent, still without torch
    needs_user_files = {str(REPO_ROOT / "suites" / "llm_internals_scaled.yaml"),
                        str(REPO_ROOT / "suites" / "cifar10_diffusion.yaml")}  # CIFAR10_DIR (data_problems hook)
    refused = {line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("EXIT 2: ")}
    assert refused <= needs_user_files, out.stdout + out.stderr
    assert out.stdout.count(": ok (") == len(suites) - len(refused), out.stdout
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY:")][0]
    assert line == "HEAVY:", f"validate imported {line[6:]}"


def test_light_declarations_cover_every_registered_name():
    """What `load_light` declares is what `load_all` registers (a module missing from a params.py fails here)."""
    registry.load_light()
    light = {"adapter": set(registry.ADAPTER_META) | set(dict(registry.ADAPTERS)),
             "metric": set(dict(registry.METRICS)), "dataset": set(dict(registry.DATASETS))}
    registry.load_all()
    full = {"adapter": set(dict(registry.ADAPTERS)), "metric": set(dict(registry.METRICS)),
            "dataset": set(dict(registry.DATASETS))}
    for kind in full:
        assert full[kind] - light[kind] == set(), f"{kind}s registered without a light declaration"
    for name, m in registry.ADAPTER_META.items():
        cls = registry.ADAPTERS[name]
        assert m.impl == f"{cls.__module__}:{cls.__name__}"
        assert (cls.Params, getattr(cls, "Budget", None), frozenset(cls.capabilities)) == (m.Params, m.Budget,
                                                                                          m.capabilities)
        assert (getattr(cls, "validate_environment", None) is None) == (m.validate_environment is None), name


def test_declaration_mismatch_is_refused():
    from bench.adapter import Adapter, AdapterParams

    class P(AdapterParams):
        pass

    registry.declare_adapter("_light_test", "tests:X", P, ("generate",))
    try:
        with pytest.raises(registry.BenchError, match="declaration"):
            @registry.register_adapter("_light_test")
            class X(Adapter):  # declares no capability, the declaration says generate
                Params = P
    finally:
        registry.ADAPTER_META.pop("_light_test", None)


def test_constants_kept_light_equal_their_sources():
    from bench.metrics import fd_fmnist, fid, fmnist_classifier, inception

    assert fid.EXTRACTOR_ID == inception.EXTRACTOR_ID
    assert (fd_fmnist.KIND, fd_fmnist.DEFAULT_INSTRUMENT) == (fmnist_classifier.KIND,
                                                             fmnist_classifier.DEFAULT_INSTRUMENT)


def test_validate_environment_hook_must_be_declared():
    """A class with a `bench validate` hook whose declaration lacks it would skip the check on the light path."""
    from bench.adapter import Adapter, AdapterParams

    class P(AdapterParams):
        pass

    registry.declare_adapter("_light_test_env", "tests:Y", P, ())
    try:
        with pytest.raises(registry.BenchError, match="validate_environment"):
            @registry.register_adapter("_light_test_env")
            class Y(Adapter):
                Params = P

                @classmethod
                def validate_environment(cls, suite, method) -> None:
                    pass
    finally:
        registry.ADAPTER_META.pop("_light_test_env", None)
