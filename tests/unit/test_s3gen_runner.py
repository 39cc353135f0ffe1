"""Which S3Gen stage the vLLM engine gets from settings: batched by default."""

from __future__ import annotations

import pytest

from chatterbox_serve.config import ConfigError, load_settings
from chatterbox_serve.model.s3gen.batch import BatchedS3GenRunner
from chatterbox_serve.model.s3gen.runner import SequentialS3GenRunner, runner_factory


class _FakeS3Gen:
    """Stands in for chatterbox-vllm's S3Gen; construction only, nothing runs."""


def test_batched_runner_is_the_default_with_the_configured_policy():
    settings = load_settings(
        {"CHATTERBOX_S3GEN_BATCH_SIZE": "32", "CHATTERBOX_S3GEN_PRECISION": "bf16"},
        dotenv_path=None,
    )
    runner = runner_factory(settings)(_FakeS3Gen())
    assert isinstance(runner, BatchedS3GenRunner)
    assert runner.policy.max_batch_size == 32 and runner.policy.precision == "bf16"
    assert runner.policy.max_length_ratio == 1.5


def test_sequential_runner_when_batching_is_off():
    settings = load_settings({"CHATTERBOX_S3GEN_BATCHED": "false"}, dotenv_path=None)
    assert isinstance(runner_factory(settings)(_FakeS3Gen()), SequentialS3GenRunner)


def test_fp16_s3gen_is_refused_at_startup_with_the_alternative():
    with pytest.raises(ConfigError, match="VLLM_S3GEN_FP16.*CHATTERBOX_S3GEN_PRECISION=bf16"):
        load_settings({"VLLM_S3GEN_FP16": "true"}, dotenv_path=None)
    assert load_settings({"VLLM_S3GEN_FP16": "false"}, dotenv_path=None).engine.s3gen_fp16 is False


def test_served_defaults_are_auto_precision_and_cuda_graphs():
    # CUDA graphs of the estimator cut first audio from 1.1 s to 0.3 s on the
    # H200 with quality inside the bounds; CPUs run eager whatever this says.
    settings = load_settings({}, dotenv_path=None)
    runner = runner_factory(settings)(_FakeS3Gen())
    assert runner.policy.precision == "auto" and runner.policy.compile == "graphs"


def test_compile_setting_reaches_the_policy():
    settings = load_settings({"CHATTERBOX_S3GEN_COMPILE": "reduce-overhead"}, dotenv_path=None)
    assert runner_factory(settings)(_FakeS3Gen()).policy.compile == "reduce-overhead"


def test_compile_with_tf32_fails_at_startup():
    settings = load_settings(
        {"CHATTERBOX_S3GEN_COMPILE": "default", "CHATTERBOX_S3GEN_PRECISION": "tf32"},
        dotenv_path=None,
    )
    with pytest.raises(ValueError, match="tf32"):
        runner_factory(settings)
