"""Library errors name the setting they are about in ``param`` (not a CLI flag in the text),
and the command that sets it knows its flag: no grep, the functions are called with bad input."""

from __future__ import annotations

import argparse

import pytest

from uscl.cli import build_parser, flag_names, with_flag
from uscl.errors import UsclError


def _flags(command: str) -> dict[str, str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return flag_names(sub.choices[command])


def _error(fn, *args, **kwargs) -> UsclError:
    with pytest.raises(UsclError) as err:
        fn(*args, **kwargs)
    return err.value


def _check(exc: UsclError, param: str, command: str, flag: str) -> None:
    assert exc.param == param, (str(exc), exc.param)
    assert " --" not in str(exc) and not str(exc).startswith("--"), str(exc)  # a notebook user passes parameters
    assert with_flag(exc, _flags(command)).endswith(f"(set with {flag})"), (command, str(exc))


FINETUNE_BAD = [  # FinetuneConfig.validate(): (bad settings, param, flag)
    (dict(store=""), "store", "--store"),
    (dict(out=""), "out", "--out"),
    (dict(mode="deep"), "mode", "--mode"),
    (dict(arch="vgg"), "arch", "--arch"),
    (dict(epochs=0), "epochs", "--epochs"),
    (dict(batch_size=0), "batch_size", "--batch-size"),
    (dict(workers=-1), "workers", "--workers"),
    (dict(max_frames_per_video=0), "max_frames_per_video", "--max-frames-per-video"),
    (dict(lr=0.0), "lr", "--lr"),
    (dict(select="val", select_on_test=True), "select_on_test", "--select-on-test"),
    (dict(mode="knn", select="val"), "select", "--select"),
    (dict(resume=True, overwrite=True), "resume", "--resume"),
    (dict(only_folds=[]), "only_folds", "--only-folds"),
    (dict(only_folds=[-1]), "only_folds", "--only-folds"),
    (dict(only_folds=[1, 1]), "only_folds", "--only-folds"),
]


@pytest.mark.parametrize("bad,param,flag", FINETUNE_BAD, ids=[p + ":" + ",".join(b) for b, p, _ in FINETUNE_BAD])
def test_finetune_config_errors_name_their_setting(bad, param, flag):
    from uscl.errors import ConfigError
    from uscl.finetune.config import FinetuneConfig

    cfg = FinetuneConfig(**{"store": "s", "out": "o", **bad})
    exc = _error(cfg.validate)
    assert isinstance(exc, ConfigError)
    for command in ("finetune", "compare"):
        _check(exc, param, command, flag)


def test_config_values_of_the_wrong_type_name_their_setting():
    from uscl.finetune.config import FinetuneConfig
    from uscl.utils.config import from_dict

    _check(_error(from_dict, FinetuneConfig, {"folds": "five"}), "folds", "finetune", "--folds")
    _check(_error(from_dict, FinetuneConfig, {"only_folds": "0,x"}), "only_folds", "finetune", "--only-folds")
    _check(_error(from_dict, FinetuneConfig, {"mode": "deep"}), "mode", "compare", "--mode")


def test_finetune_functions_name_their_parameter(make_store, tmp_path):
    from uscl.finetune.compare import finetune_inits
    from uscl.finetune.config import FinetuneConfig
    from uscl.checkpoint.inits import parse_init
    from uscl.finetune.splits import carve_validation, make_splits, parse_where, select_folds
    from uscl.store import FrameStore

    store = FrameStore(make_store(n_videos=6, frames=2))
    _check(_error(parse_where, ["probe"]), "where", "finetune", "--where")
    _check(_error(parse_init, "imagenet1k"), "init", "finetune", "--init")
    _check(_error(parse_init, "imagenet"), "init", "compare", "--init")
    _check(_error(make_splits, store, n_folds=1), "folds", "finetune", "--folds")
    _check(_error(make_splits, store, n_folds=7), "folds", "finetune", "--folds")
    _check(_error(make_splits, store, n_folds=3), "merge_small_folds", "finetune", "--merge-small-folds")
    _check(_error(make_splits, store, n_folds=2, where={"probe": "convex"}), "where", "finetune", "--where")
    _check(_error(make_splits, store, n_folds=2, classes=["covid", "flu"]), "classes", "finetune", "--classes")
    splits = make_splits(store, n_folds=2)
    _check(_error(select_folds, splits, [5]), "only_folds", "finetune", "--only-folds")
    _check(_error(carve_validation, splits, 1.5), "val_fraction", "finetune", "--val-fraction")
    base = FinetuneConfig(store=str(store.root), out=str(tmp_path / "cmp"))
    _check(_error(finetune_inits, base, [], tmp_path / "cmp"), "inits", "compare", "--init")


def test_io_and_device_functions_name_their_parameter(tmp_path):
    from uscl.pipeline import PipelineConfig, run_pipeline
    from uscl.store.prepare import prepare
    from uscl.synth import generate
    from uscl.utils.atomic import prepare_output_dir
    from uscl.utils.device import resolve_device
    from uscl.video.labels import LabelResolver, parse_prefix_map
    from uscl.video.labels import parse_where as parse_input_where

    _check(_error(resolve_device, "gpu"), "device", "predict", "--device")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    _check(_error(prepare_output_dir, full), "overwrite", "predict", "--overwrite")
    _check(_error(prepare, tmp_path, full), "overwrite", "prepare", "--overwrite")
    _check(_error(prepare, tmp_path, tmp_path / "new", labels_csv=tmp_path / "no.csv"), "labels_csv", "prepare",
           "--labels")
    _check(_error(parse_input_where, ["probe"]), "where", "prepare", "--where")
    _check(_error(parse_prefix_map, "Cov"), "prefix_map", "prepare", "--prefix-map")
    _check(_error(LabelResolver, label_from="grandparent"), "label_from", "prepare", "--label-from")
    for bad, param, flag in ((dict(size=31), "size", "--size"), (dict(frames=0), "frames", "--frames"),
                             (dict(videos_per_class=0), "videos_per_class", "--videos-per-class"),
                             (dict(classes="flu"), "classes", "--classes")):
        _check(_error(generate, tmp_path / "synth", **bad), param, "synth", flag)
    cfg = PipelineConfig(videos=str(tmp_path), out=str(tmp_path / "p"), resume=True, overwrite=True)
    _check(_error(run_pipeline, cfg, log=lambda *a: None), "resume", "pipeline", "--resume")


def test_model_functions_name_their_parameter(tmp_path):
    from uscl.infer.export import export_model
    from uscl.infer.model import load_model
    from uscl.infer.predict import predict

    one = tmp_path / "model.safetensors"
    one.write_bytes(b"")
    _check(_error(load_model, one, 0), "fold", "predict", "--fold")
    _check(_error(export_model, one, tmp_path / "e", "tflite"), "fmt", "export", "--format")
    _check(_error(predict, one, ["x.mp4"], batch_size=0), "batch_size", "predict", "--batch-size")
