"""The vLLM backend's names, checked against vLLM's real source without installing it.

The wheel of ``VLLM_VERSION`` is fetched once with ``pip download --no-deps`` (no build,
no install) into ``~/.cache/pst_distill/wheels`` (``PST_WHEEL_CACHE`` overrides), and its
Python files are read with ``ast`` straight from the zip. The names to check are derived
from our backend's source, also by ``ast`` (so the test keeps up with the backend):
``vllm.<attr>`` lookups, ``SamplingParams(...)`` keywords, the ``LLM(**llm_kwargs(cfg))``
keys, the ``llm.generate(...)`` call and the ``RequestOutput``/``CompletionOutput``
attributes read from its result. Each must exist in vLLM with the meaning we rely on
(the hand list :data:`MEANING`: annotation types, finish-reason strings).

Why the wheel and not the 47 MB sdist: ``pip download`` of vLLM's sdist builds its metadata,
which installs vLLM's build requirements (torch and more); the wheel needs nothing built.
Skipped with the reason when the package index cannot be reached.
"""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow
VLLM_VERSION = "0.33.0"   # latest on PyPI when written; README "Teacher backends" names it
PLATFORM = "manylinux_2_28_x86_64"  # any host fetches the same (pure-Python parts identical)
BACKEND = Path(__file__).resolve().parents[2] / "src" / "pst_distill" / "teacher"
SOURCES = [BACKEND / "vllm_backend.py", BACKEND / "vllm_worker.py"]

# What each name must mean: a substring of its annotation in vLLM's source (or one of a
# tuple of them; ModelDType is vLLM's Literal of dtype strings). A name the backend starts
# using with no entry here fails the test until its meaning is added.
MEANING = {
    "SamplingParams": {"n": "int", "temperature": "float", "top_p": "float",
                       "max_tokens": "int", "stop": "list[str]", "seed": "int"},
    "LLM": {"model": "str", "revision": "str", "tensor_parallel_size": "int",
            "gpu_memory_utilization": "float", "max_model_len": "int",
            "dtype": ("str", "ModelDType"), "enforce_eager": "bool", "trust_remote_code": "bool"},
    "generate": {"use_tqdm": "bool"},
    "RequestOutput": {"outputs": "list[CompletionOutput]", "prompt_token_ids": "list[int]"},
    "CompletionOutput": {"text": "str", "token_ids": "[int]", "finish_reason": "str"},
}


# ------------------------------------------------------------------ fetching the wheel
NETWORK_ERRORS = ("from versions: none", "NewConnectionError", "Max retries exceeded",
                  "Temporary failure in name resolution", "Network is unreachable",
                  "Connection refused", "Could not fetch URL", "ReadTimeoutError")


def _unreachable(pip_stderr: str) -> bool:
    """pip saw no index at all (vLLM exists on PyPI: no versions means no answer)."""
    if any(marker in pip_stderr for marker in NETWORK_ERRORS):
        return True
    try:
        requests.head("https://pypi.org/simple/vllm/", timeout=15)
        return False
    except requests.RequestException:
        return True


def fetch_wheel() -> Path:
    cache = Path(os.environ.get("PST_WHEEL_CACHE", Path.home() / ".cache/pst_distill/wheels"))
    pattern = str(cache / f"vllm-{VLLM_VERSION}-*.whl")
    if glob.glob(pattern):
        return Path(sorted(glob.glob(pattern))[0])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))  # never looks complete
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", PLATFORM, "--python-version", "3.11", "--implementation", "cp",
               f"vllm=={VLLM_VERSION}", "-d", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            pytest.skip(f"package index too slow: vllm=={VLLM_VERSION} not fetched in 900 s")
        wheels = list(tmp.glob("vllm-*.whl"))
        if proc.returncode != 0 or not wheels:
            if _unreachable(proc.stderr):
                pytest.skip(f"package index unreachable: cannot fetch the vllm=={VLLM_VERSION} "
                            f"wheel ({proc.stderr.strip().splitlines()[-1][:200]})")
            pytest.fail(f"pip download vllm=={VLLM_VERSION} failed: {proc.stderr[-2000:]}")
        final = cache / wheels[0].name
        os.replace(wheels[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------- vLLM's source, by ast
class VllmSource:
    def __init__(self, wheel: Path):
        self.zip = zipfile.ZipFile(wheel)
        self._trees: dict[str, ast.Module] = {}

    def tree(self, module: str) -> ast.Module:
        """``vllm.entrypoints.llm`` -> its parsed source (module or package)."""
        if module not in self._trees:
            base = module.replace(".", "/")
            for path in (f"{base}.py", f"{base}/__init__.py"):
                if path in self.zip.namelist():
                    self._trees[module] = ast.parse(self.zip.read(path))
                    break
            else:
                raise KeyError(f"no module {module} in the vLLM wheel")
        return self._trees[module]

    def top_level(self, name: str) -> tuple[str, str]:
        """Where ``vllm.<name>`` comes from: (module, attribute)."""
        tree = self.tree("vllm")
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    getattr(t, "id", "") == "MODULE_ATTRS" for t in node.targets):
                lazy = ast.literal_eval(node.value)  # vLLM's lazy __getattr__ table
                if name in lazy:
                    mod, attr = lazy[name].split(":")
                    return "vllm" + mod if mod.startswith(".") else mod, attr
        found = self._imported(tree, "vllm", name)
        if found is None:
            raise KeyError(f"vllm has no top-level name {name!r}")
        return found

    @staticmethod
    def _imported(tree: ast.Module, module: str, name: str) -> tuple[str, str] | None:
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        src = node.module or ""
                        if node.level:
                            pkg = module.split(".")
                            src = ".".join(pkg[: len(pkg) - node.level + 1] + [src]).strip(".")
                        return src, alias.name
        return None

    def cls(self, module: str, name: str) -> tuple[str, ast.ClassDef]:
        """The class definition, following ``from x import name`` re-exports."""
        tree = self.tree(module)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return module, node
        found = self._imported(tree, module, name)
        if found is None:
            raise KeyError(f"class {name} not found in {module}")
        return self.cls(*found)

    def method(self, module: str, cls: ast.ClassDef, name: str):
        """A method of the class or of one of its bases (depth first)."""
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        for base in cls.bases:
            base_name = ast.unparse(base).split(".")[-1].split("[")[0]
            try:
                mod, base_cls = self.cls(module, base_name)
            except KeyError:
                continue
            found = self.method(mod, base_cls, name)
            if found is not None:
                return found
        return None


def fields(cls: ast.ClassDef) -> dict[str, str]:
    """Class-level annotated fields (dataclass, msgspec.Struct): name -> annotation."""
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def params(fn: ast.FunctionDef) -> dict[str, str]:
    a = fn.args
    return {p.arg: ast.unparse(p.annotation) if p.annotation else ""
            for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"}


def self_attrs(fn: ast.FunctionDef) -> set[str]:
    return {t.attr for n in ast.walk(fn) if isinstance(n, (ast.Assign, ast.AnnAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"}


def constructor_args(src: VllmSource, module: str, cls: ast.ClassDef) -> dict[str, str]:
    """Keywords the class accepts: ``__init__`` params, plus the fields of the class its
    ``**kwargs`` are forwarded to (``LLM`` -> ``EngineArgs``); fields without ``__init__``."""
    init = src.method(module, cls, "__init__")
    if init is None:
        return fields(cls)
    accepted = params(init)
    if init.args.kwarg is not None:
        for call in ast.walk(init):
            if isinstance(call, ast.Call) and any(
                    k.arg is None and getattr(k.value, "id", "") == init.args.kwarg.arg
                    for k in call.keywords):
                target = ast.unparse(call.func).split(".")[-1]
                _, target_cls = src.cls(module, target)
                accepted = {**fields(target_cls), **accepted}
    return accepted


# ----------------------------------------------------------- our backend, by ast
class BackendUse:
    """Every vLLM name the backend's source uses."""

    def __init__(self, paths: list[Path]):
        self.trees = [ast.parse(p.read_text()) for p in paths]
        self.nodes = [n for t in self.trees for n in ast.walk(t)]

    def module_attrs(self) -> set[str]:
        attrs = {n.attr for n in self.nodes if isinstance(n, ast.Attribute)
                 and getattr(n.value, "id", "") == "vllm"}
        attrs |= {n.args[1].value for n in self.nodes if isinstance(n, ast.Call)
                  and getattr(n.func, "id", "") == "getattr" and len(n.args) >= 2
                  and getattr(n.args[0], "id", "") == "vllm"
                  and isinstance(n.args[1], ast.Constant)}
        return attrs

    def calls(self, attr: str) -> list[ast.Call]:
        return [n for n in self.nodes if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr == attr]

    def keywords(self, attr: str) -> set[str]:
        return {k.arg for c in self.calls(attr) for k in c.keywords if k.arg}

    def llm_kwargs_keys(self) -> set[str]:
        fn = next(n for n in self.nodes if isinstance(n, ast.FunctionDef)
                  and n.name == "llm_kwargs")
        ret = next(n for n in ast.walk(fn) if isinstance(n, ast.Return))
        assert isinstance(ret.value, ast.Dict), "llm_kwargs must return a dict literal"
        return {k.value for k in ret.value.keys}

    def output_attrs(self) -> tuple[set[str], set[str]]:
        """Attributes read from ``llm.generate``'s items (RequestOutput) and from their
        ``.outputs[i]`` (CompletionOutput), followed through assignments and loops."""
        results = {t.id for n in self.nodes if isinstance(n, ast.Assign)
                   and isinstance(n.value, ast.Call) and n.value in self.calls("generate")
                   for t in n.targets if isinstance(t, ast.Name)}
        req_vars = set()
        for n in self.nodes:
            if isinstance(n, ast.For):
                names = {getattr(a, "id", None) for a in ast.walk(n.iter)}
                if names & results:
                    elts = n.target.elts if isinstance(n.target, ast.Tuple) else [n.target]
                    req_vars.add(elts[-1].id)
        comp_vars = {t.id for n in self.nodes if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Subscript)
                     and isinstance(n.value.value, ast.Attribute)
                     and getattr(n.value.value.value, "id", "") in req_vars
                     for t in n.targets if isinstance(t, ast.Name)}
        def read(names):
            return {n.attr for n in self.nodes if isinstance(n, ast.Attribute)
                    and getattr(n.value, "id", "") in names}
        return read(req_vars), read(comp_vars)

    def finish_reasons(self) -> set[str]:
        """String constants compared with a ``.finish_reason``."""
        return {c.value for n in self.nodes if isinstance(n, ast.Compare)
                and isinstance(n.left, ast.Attribute) and n.left.attr == "finish_reason"
                for c in n.comparators if isinstance(c, ast.Constant)}


# ------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def vllm_src() -> VllmSource:
    return VllmSource(fetch_wheel())


@pytest.fixture(scope="module")
def use() -> BackendUse:
    return BackendUse(SOURCES)


def check_meaning(kind: str, used: set[str], accepted: dict[str, str]) -> None:
    missing = sorted(used - set(accepted))
    assert not missing, f"vLLM {VLLM_VERSION} {kind} has no {missing}"
    unknown = sorted(used - set(MEANING[kind]))
    assert not unknown, f"{kind} {unknown}: used by the backend; add their meaning to MEANING"
    def means(name):
        want = MEANING[kind][name]
        return any(w in accepted[name] for w in ((want,) if isinstance(want, str) else want))

    wrong = {n: accepted[n] for n in used if not means(n)}
    assert not wrong, f"vLLM {VLLM_VERSION} {kind}: unexpected types {wrong}"


def test_module_attributes_exist(vllm_src, use):
    attrs = use.module_attrs()
    assert len(attrs) >= 2, attrs  # the extraction found vllm.LLM, vllm.SamplingParams ...
    missing = []
    for name in sorted(attrs):
        try:
            module, attr = vllm_src.top_level(name)
            if attr != "__version__":
                vllm_src.cls(module, attr)
        except KeyError:
            missing.append(name)
    assert not missing, f"vLLM {VLLM_VERSION} has no top-level {missing}"


def test_sampling_params_keywords(vllm_src, use):
    used = use.keywords("SamplingParams")
    assert len(used) >= 3, used  # the extraction found the SamplingParams(...) call
    module, cls = vllm_src.cls(*vllm_src.top_level("SamplingParams"))
    check_meaning("SamplingParams", used, constructor_args(vllm_src, module, cls))


def test_llm_keywords(vllm_src, use):
    calls = use.calls("LLM")
    assert calls and all(not c.args for c in calls), "LLM(...) is called with keywords only"
    used = use.llm_kwargs_keys() | use.keywords("LLM")
    assert len(used) >= 3, used  # the extraction found llm_kwargs' dict
    module, cls = vllm_src.cls(*vllm_src.top_level("LLM"))
    check_meaning("LLM", used, constructor_args(vllm_src, module, cls))


def test_generate_signature(vllm_src, use):
    module, cls = vllm_src.cls(*vllm_src.top_level("LLM"))
    gen = vllm_src.method(module, cls, "generate")
    assert gen is not None, f"vLLM {VLLM_VERSION} LLM has no generate"
    accepted = params(gen)
    positional = [p.arg for p in gen.args.posonlyargs + gen.args.args if p.arg != "self"]
    calls = [c for c in use.calls("generate") if getattr(c.func.value, "id", "") == "llm"]
    assert calls, "no llm.generate(...) call found in the backend"
    for call in calls:
        # we pass (prompts, one SamplingParams per prompt) positionally
        assert positional[: len(call.args)] == ["prompts", "sampling_params"][: len(call.args)]
        assert "Sequence[SamplingParams]" in accepted["sampling_params"]
        check_meaning("generate", {k.arg for k in call.keywords}, accepted)


def test_request_and_completion_output_attributes(vllm_src, use):
    req_attrs, comp_attrs = use.output_attrs()
    assert "outputs" in req_attrs and "text" in comp_attrs, (req_attrs, comp_attrs)
    module, req_cls = vllm_src.cls(*vllm_src.top_level("RequestOutput"))
    init = vllm_src.method(module, req_cls, "__init__")
    assigned = self_attrs(init)
    req_types = {n: t for n, t in params(init).items() if n in assigned}
    check_meaning("RequestOutput", req_attrs, req_types)
    _, comp_cls = vllm_src.cls(*vllm_src.top_level("CompletionOutput"))
    check_meaning("CompletionOutput", comp_attrs, fields(comp_cls))


def test_finish_reasons_we_compare_with_exist(vllm_src, use):
    used = use.finish_reasons()
    assert "length" in used, used
    tree = vllm_src.tree("vllm.v1.engine")
    strings = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and any(getattr(t, "id", "") == "FINISH_REASON_STRINGS" for t in n.targets))
    assert used <= set(strings), f"vLLM {VLLM_VERSION} finish reasons are {strings}"
