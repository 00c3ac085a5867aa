"""Nothing the harness loads from disk can run code: a source scan that fails on any new
pickle-based load that is not guarded.

Rules, over every call in bench/, adapters/ and scripts/ (Python AST, so multi-line calls count):

* ``torch.load(...)`` must pass ``weights_only=True`` (torch's restricted unpickler);
* ``np.load(...)`` / ``numpy.load(...)`` must pass ``allow_pickle=False``;
* ``<Model>.from_pretrained(...)`` must pass ``use_safetensors=True`` (``*Tokenizer*.from_pretrained``
  reads JSON / SentencePiece files: allowed);
* any other pickle-style loader (``pickle.load(s)``, a ``pickle.Unpickler`` subclass, ``torch.jit.load``,
  ``joblib.load``, ``dill``/``cloudpickle``, ``pandas.read_pickle``, ``marshal.load(s)``, ``shelve.open``,
  ``yaml.load`` / ``yaml.unsafe_load``) needs a ``# verified-load: <why>`` comment on its first line or the
  line above, saying what verified the bytes first (a published checksum, a restricted unpickler ...).
"""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = ("bench", "adapters", "scripts")
MARK = "# verified-load:"

_NEEDS_MARK = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("jit", "load"),
               ("joblib", "load"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
               ("cloudpickle", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("marshal", "load"),
               ("marshal", "loads"), ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load")}


def _name(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def problems_in(source: str, where: str) -> list[str]:
    """Unguarded pickle-based loads in ``source`` as ``where:line: what`` strings."""
    lines = source.splitlines()
    tree = ast.parse(source)

    def marked(lineno: int) -> bool:
        return any(MARK in lines[i - 1] for i in (lineno, lineno - 1) if 0 < i <= len(lines))

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for b in node.bases:
                if isinstance(b, ast.Attribute) and (_name(b.value), b.attr) == ("pickle", "Unpickler") \
                        and not marked(node.lineno):
                    out.append(f"{where}:{node.lineno}: pickle.Unpickler subclass without {MARK!r}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, attr = _name(node.func.value), node.func.attr
        if (owner, attr) == ("torch", "load"):
            if _kw(node, "weights_only") is not True:
                out.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        elif (owner, attr) in (("np", "load"), ("numpy", "load")):
            if _kw(node, "allow_pickle") is not False:
                out.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
        elif attr == "from_pretrained":
            if "Tokenizer" not in owner and _kw(node, "use_safetensors") is not True:
                out.append(f"{where}:{node.lineno}: {owner}.from_pretrained without use_safetensors=True")
        elif (owner, attr) in _NEEDS_MARK and not marked(node.lineno):
            out.append(f"{where}:{node.lineno}: {owner}.{attr} without {MARK!r}")
    return out


def test_no_unguarded_pickle_loads_in_the_harness():
    found = []
    files = [p for t in TREES if (REPO / t).is_dir() for p in sorted((REPO / t).rglob("*.py"))]
    assert len(files) > 50
    for p in files:
        found += problems_in(p.read_text(), str(p.relative_to(REPO)))
    assert found == [], "unguarded pickle-based loads:\n" + "\n".join(found)


def test_the_scan_catches_each_kind():
    bad = """
import pickle, torch, numpy as np
class U(pickle.Unpickler):
    pass
torch.load(p)
torch.load(p, weights_only=False)
np.load(p)
np.load(p, allow_pickle=True)
AutoModelForCausalLM.from_pretrained(d)
pickle.loads(b)
torch.jit.load(p)
"""
    assert len(problems_in(bad, "x.py")) == 8
    good = """
import pickle, torch, numpy as np
torch.load(p, map_location="cpu",
           weights_only=True)
np.load(p, allow_pickle=False)
AutoTokenizer.from_pretrained(d)
Qwen3ForCausalLM.from_pretrained(d, use_safetensors=True)
x = pickle.loads(b)  # verified-load: md5 checked above
"""
    assert problems_in(good, "y.py") == []
