"""Ray Data streaming: the same training as a torch dataset, epochs from the row count, seeded
per-epoch shuffling, exact mid-epoch resume, exact-once evaluation shards, bounded memory on a
parquet set larger than the object store, and one run on two real Ray Train workers."""

import copy
import ctypes
import json
import logging
import os
import pickle
import statistics

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from conftest import RegressionDataset, RegressionModel, assert_same_logs, runtime_env_for_tests
from ray.train import ScalingConfig

import raytrainer
from raytrainer import StreamingDataset, Trainer, TrainerCallback, stream
from raytrainer.data.loaders import set_dataloader_epoch
from raytrainer.data.samplers import EpochShuffleSampler, even_shard_bounds
from raytrainer.data.stream_batches import (
    EvalStreamBatches,
    StreamCollate,
    columns_to_tensors,
    row_range_batches,
)
from raytrainer.data.stream_shards import torch_trainer_data
from raytrainer.runtime.payload import blueprint_of

OBJECT_STORE_BYTES = 80 * 1024**2  # Ray's minimum is 75 MiB


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    ray.init(address="local", num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False,
             runtime_env=runtime_env_for_tests())
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def _table(x, y, idx=None) -> pa.Table:
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    columns = {"x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
               "labels": pa.FixedSizeListArray.from_arrays(pa.array(y.ravel()), 1)}
    if idx is not None:
        columns["idx"] = pa.array(idx, type=pa.int64())
    return pa.table(columns)


def _regression_table(n: int, seed: int = 0) -> pa.Table:
    data = RegressionDataset(n, seed=seed)
    return _table(data.x, data.y, idx=np.arange(n))


def _parquet_folder(folder, table: pa.Table, rows_per_file: int) -> str:
    os.makedirs(folder, exist_ok=True)
    for number, start in enumerate(range(0, table.num_rows, rows_per_file)):
        pq.write_table(table.slice(start, rows_per_file), os.path.join(folder, f"part-{number:03d}.parquet"))
    return str(folder)


class RowTrackingModel(RegressionModel):
    """Records the row ids of every training batch (``idx`` reaches forward because it is a parameter;
    training is told from evaluation by gradients being on)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, labels=None, idx=None):
        if torch.is_grad_enabled() and idx is not None:
            self.seen.extend(idx.tolist())
        return super().forward(x, labels)


def _same_parameters(a, b, atol=0.0):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)


# ---------------------------------------------------------------------------------------------
# Training on a stream is training on the same rows
# ---------------------------------------------------------------------------------------------
def test_stream_trains_the_same_weights_as_the_torch_dataset(make_args):
    data, dev = RegressionDataset(30), RegressionDataset(10, seed=3)
    order = list(EpochShuffleSampler(30, 4, seed=42))  # the map-style run's epoch-0 order
    rows = _table(data.x[order], data.y[order])
    torch.manual_seed(0)
    model = RegressionModel()
    twin = copy.deepcopy(model)
    common = dict(num_train_epochs=1, gradient_accumulation_steps=2, learning_rate=0.05, seed=42,
                  eval_strategy="epoch", per_device_eval_batch_size=3)
    torch_run = Trainer(model=model, args=make_args(**common), train_dataset=data, eval_dataset=dev)
    torch_run.train()
    stream_run = Trainer(model=twin, args=make_args(**common), train_dataset=stream(rows, shuffle=False),
                         eval_dataset=stream(_table(dev.x, dev.y)))
    stream_run.train()

    assert stream_run.state.global_step == torch_run.state.global_step == 4  # 8 batches (the last of 2 rows)
    _same_parameters(model, twin, atol=1e-6)
    assert_same_logs(stream_run.state.log_history, torch_run.state.log_history,
                     ("loss", "grad_norm", "learning_rate", "eval_loss", "epoch", "step"))


@pytest.mark.slow
def test_epoch_strategies_on_a_parquet_stream_match_a_map_style_run(tmp_path, make_args):
    folder = _parquet_folder(tmp_path / "rows", _regression_table(22), rows_per_file=8)  # 3 files
    common = dict(num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
                  learning_rate=0.05, seed=3)
    model = RowTrackingModel()
    streamed = Trainer(model=model, args=make_args(output_dir=str(tmp_path / "stream"), **common),
                       train_dataset=stream(folder), eval_dataset=stream(_regression_table(22)))
    output = streamed.train()
    map_style = Trainer(model=RegressionModel(), args=make_args(output_dir=str(tmp_path / "map"), **common),
                        train_dataset=RegressionDataset(22), eval_dataset=RegressionDataset(22))
    map_style.train()

    # 22 rows, batch 4: 6 steps an epoch, counted from the parquet footers, no max_steps needed
    assert output.global_step == streamed.state.max_steps == 12
    schedule = [(e["step"], e["epoch"], e.get("learning_rate"), "eval_loss" in e) for e in streamed.state.log_history]
    assert schedule == [(e["step"], e["epoch"], e.get("learning_rate"), "eval_loss" in e)
                        for e in map_style.state.log_history]
    assert [(step, epoch) for step, epoch, _, is_eval in schedule if is_eval] == [(6, 1.0), (12, 2.0)]
    assert {"checkpoint-6", "checkpoint-12"} <= set(os.listdir(tmp_path / "stream"))
    # each epoch is a permutation of all 22 rows (file order and rows shuffled), and the epochs differ
    epochs = [model.seen[:22], model.seen[22:]]
    assert len(model.seen) == 44 and all(sorted(epoch) == list(range(22)) for epoch in epochs)
    assert epochs[0] != epochs[1] and list(range(22)) not in epochs


def _epoch_orders(make_args, source, epochs=2, **overrides):
    trainer = Trainer(model=RowTrackingModel(), args=make_args(**overrides), train_dataset=source)
    loader = trainer.get_train_dataloader()
    orders = []
    for epoch in range(epochs):
        set_dataloader_epoch(loader, epoch)
        orders.append([int(i) for batch in loader for i in batch["idx"]])
    return orders, len(loader)


@pytest.mark.slow
def test_shuffle_is_seeded_by_the_seed_and_the_epoch(tmp_path, make_args):
    table = _regression_table(20)
    source = stream(ray.data.from_arrow([table.slice(0, 10), table.slice(10)]), local_shuffle_buffer_size=8)
    first, batches = _epoch_orders(make_args, source, seed=1)
    again, _ = _epoch_orders(make_args, source, seed=1)
    other_seed, _ = _epoch_orders(make_args, source, seed=2)
    by_data_seed, _ = _epoch_orders(make_args, source, seed=1, data_seed=7)
    same_data_seed, _ = _epoch_orders(make_args, source, seed=5, data_seed=7)

    assert batches == 5
    assert first == again  # reproducible run to run
    assert first[0] != first[1] and all(sorted(order) == list(range(20)) for order in first)
    assert other_seed != first and by_data_seed == same_data_seed != first
    unshuffled, _ = _epoch_orders(make_args, stream(table, shuffle=False), seed=1)
    assert unshuffled == [list(range(20))] * 2
    # a parquet source also shuffles its file order, the same way every time for a seed
    folder = _parquet_folder(tmp_path / "rows", table, rows_per_file=4)
    parquet, _ = _epoch_orders(make_args, stream(folder, local_shuffle_buffer_size=4), epochs=1, seed=1)
    assert parquet == _epoch_orders(make_args, stream(folder, local_shuffle_buffer_size=4), epochs=1, seed=1)[0]
    assert sorted(parquet[0]) == list(range(20)) and parquet[0] != list(range(20))


def test_unknown_length_needs_max_steps_and_trains_with_it(make_args):
    def features(batch):
        x = np.stack([np.sin(batch["id"] + k) for k in range(4)], axis=1).astype(np.float32)
        return {"x": x, "labels": x.sum(1, keepdims=True)}

    pipeline = ray.data.range(20).map_batches(features)
    with pytest.raises(ValueError, match=r"unknown number of rows.*Set TrainingArguments.max_steps"):
        Trainer(model=RegressionModel(), args=make_args(), train_dataset=stream(pipeline, count_rows=False))
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=7, learning_rate=0.05),
                      train_dataset=stream(pipeline, count_rows=False))
    assert not hasattr(trainer.get_train_dataloader(), "__len__")
    output = trainer.train()
    assert output.global_step == 7  # 5 batches a pass, so the stream was read again for steps 6 and 7
    assert stream(pipeline, num_rows=20).num_rows == 20


def test_a_ray_dataset_given_directly_is_streamed_and_stays_on_the_driver(make_args):
    dataset = ray.data.from_arrow(_regression_table(12))
    trainer = Trainer(model=RegressionModel(), args=make_args(), train_dataset=dataset,
                      eval_dataset={"dev": dataset})
    adopted = trainer.train_dataset
    assert isinstance(adopted, StreamingDataset) and adopted.num_rows == 12
    assert trainer.eval_dataset["dev"] is adopted
    # workers rebuild the Trainer from the stream, which pickles without the Ray dataset
    arguments = blueprint_of(trainer).arguments
    assert arguments["train_dataset"] is adopted and arguments["eval_dataset"]["dev"] is adopted
    copied = pickle.loads(pickle.dumps(adopted))
    assert (copied.num_rows, copied.column_names, copied.on_driver) == (12, ["x", "labels", "idx"], False)
    with pytest.raises(RuntimeError, match="get_dataset_shard"):
        copied.ray_dataset()
    kwargs = torch_trainer_data(trainer)
    assert sorted(kwargs["datasets"]) == ["eval_dev", "train"]
    assert kwargs["dataset_config"]._datasets_to_split == ["train"]
    assert kwargs["datasets"]["train"].columns() == ["x", "labels"]  # idx is not a forward() argument


def test_resume_mid_epoch_sees_the_same_rows_as_a_non_stop_run(tmp_path, make_args):
    source = stream(_regression_table(20))  # 5 batches an epoch, reshuffled every epoch
    common = dict(num_train_epochs=3, learning_rate=0.05, seed=9, save_strategy="steps", save_steps=7)
    torch.manual_seed(0)
    model = RowTrackingModel()
    twin, third = copy.deepcopy(model), copy.deepcopy(model)
    Trainer(model=model, args=make_args(output_dir=str(tmp_path / "full"), **common), train_dataset=source).train()

    class StopAt7(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 7

    stopped_args = make_args(output_dir=str(tmp_path / "stopped"), **common)
    Trainer(model=twin, args=stopped_args, train_dataset=source, callbacks=[StopAt7()]).train()
    resumed = Trainer(model=third, args=stopped_args, train_dataset=source)
    resumed.train(resume_from_checkpoint=str(tmp_path / "stopped" / "checkpoint-7"))

    assert resumed.state.global_step == 15
    assert third.seen == model.seen[7 * 4:]  # step 7 is in epoch 1: rows 28.. of the non-stop run
    _same_parameters(model, third)


# ---------------------------------------------------------------------------------------------
# Evaluation shards and collation
# ---------------------------------------------------------------------------------------------
def test_local_parquet_reads_in_blocks_sized_from_the_files_and_counts_rows_from_footers(tmp_path, monkeypatch):
    from raytrainer.data import streaming as streaming_module

    for number in range(4):
        rows = np.arange(number * 50, number * 50 + 50, dtype=np.float32)[:, None]
        pq.write_table(_table(rows, rows), tmp_path / f"part-{number}.parquet")
    stream_of_folder = stream(str(tmp_path), shuffle=False)
    assert stream_of_folder.num_rows == 200  # from the footers, before anything is read
    # a small folder is one block: no executor left scheduling while the steps run
    assert stream_of_folder.ray_dataset().materialize().num_blocks() == 1
    # blocks never exceed the size cap: one file per block when the cap is below a file's size
    monkeypatch.setattr(streaming_module, "_block_bytes", lambda context: 1)
    dataset = stream(str(tmp_path), shuffle=False).ray_dataset()
    assert dataset.materialize().num_blocks() == 4
    assert sorted(float(row["labels"][0]) for row in dataset.iter_rows()) == [float(i) for i in range(200)]


def test_eval_shards_cover_every_row_once_in_dataset_order():
    dataset = ray.data.from_arrow(_regression_table(13)).repartition(4)  # blocks not aligned with batches
    collate = StreamCollate(raytrainer.default_data_collator)
    shards = []
    for rank in range(3):
        start, stop = even_shard_bounds(13, 3, rank)
        batches = list(EvalStreamBatches(dataset, batch_size=3, collate_fn=collate, device="cpu",
                                         start=start, stop=stop))
        shards.append([batch["idx"].tolist() for batch in batches])
    assert shards == [[[0, 1, 2], [3, 4]], [[5, 6, 7], [8]], [[9, 10, 11], [12]]]


def test_row_range_batches_recut_misaligned_blocks():
    blocks = [pa.table({"i": list(range(a, b))}) for a, b in ((0, 4), (4, 5), (5, 11))]
    cut = [batch["i"].to_pylist() for batch in row_range_batches(blocks, start=2, stop=10, batch_size=3)]
    assert cut == [[2, 3, 4], [5, 6, 7], [8, 9]]
    assert [b["i"].to_pylist() for b in row_range_batches(blocks, 0, None, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10]]


def test_default_collate_is_the_default_data_collator_column_by_column():
    table = pa.table({"label": [1, 0], "text": ["a", "b"], "ids": pa.array([[1, 2, 3], [4, 5, 6]]),
                      "score": pa.array([0.5, 1.5], type=pa.float64())})
    batch = columns_to_tensors(table)
    expected = raytrainer.default_data_collator(table.to_pylist())
    assert sorted(batch) == sorted(expected) == ["ids", "labels", "score"]
    for key in batch:
        assert torch.equal(batch[key], expected[key]) and batch[key].dtype == expected[key].dtype, key
    assert columns_to_tensors(pa.table({"label_ids": [0.25]}))["labels"].dtype == torch.float32
    with pytest.raises(ValueError, match=r"Column 'ids' holds sequences of different lengths \(1 to 2\).*DataCollatorWithPadding"):
        columns_to_tensors(pa.table({"ids": pa.array([[1], [2, 3]])}))


def test_collate_keeps_the_model_columns_and_hands_rows_to_a_custom_collator():
    received = []

    def collator(features):
        received.extend(features)
        return {"n": len(features)}

    table = pa.table({"x": [1.0, 2.0], "extra": ["a", "b"]})
    assert StreamCollate(collator, columns=["x", "labels"])(table) == {"n": 2}
    assert received == [{"x": 1.0}, {"x": 2.0}]
    with pytest.raises(ValueError, match=r"No column of the evaluation dataset matches.*\['x', 'extra'\]"):
        StreamCollate(collator, columns=["input_ids"], description="evaluation")(table)


def test_bad_stream_arguments_fail_early(tmp_path, make_args):
    with pytest.raises(TypeError, match="cannot stream a list"):
        stream([1, 2])
    with pytest.raises(ValueError, match=r"only parquet files.*ray.data.read_csv"):
        stream(str(tmp_path / "rows.csv"))
    with pytest.raises(ValueError, match="no such file or folder"):
        stream(str(tmp_path / "missing.parquet"))
    with pytest.raises(TypeError, match=r"stream\(shuffle=...\) must be True or False"):
        stream(_regression_table(4), shuffle="yes")
    with pytest.raises(ValueError, match=r"stream\(local_shuffle_buffer_size=0\) must be an int >= 1"):
        stream(_regression_table(4), local_shuffle_buffer_size=0)
    rows = _regression_table(8)
    with pytest.raises(ValueError, match="local_shuffle_buffer_size=2.*smaller than per_device_train_batch_size=4"):
        Trainer(model=RegressionModel(), args=make_args(), train_dataset=stream(rows, local_shuffle_buffer_size=2))
    with pytest.raises(ValueError, match="group_by_length=True needs a map-style train_dataset"):
        Trainer(model=RegressionModel(), args=make_args(group_by_length=True), train_dataset=stream(rows))
    with pytest.raises(ValueError, match="has 8 rows for 9 workers"):
        Trainer(model=RegressionModel(), args=make_args(), train_dataset=stream(rows),
                scaling_config=ScalingConfig(num_workers=9))


# ---------------------------------------------------------------------------------------------
# Memory: a parquet set 3x larger than the object store
# ---------------------------------------------------------------------------------------------
def _live_heap_bytes() -> int:
    """This process's private (anonymous) memory after glibc and Arrow hand back what they keep
    cached, so that allocator caches do not read as data held."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    pa.default_memory_pool().release_unused()
    with open("/proc/self/smaps_rollup") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("Anonymous:"))


class MemoryProbe(TrainerCallback):
    """Samples the live heap at every step end while the stream is read."""

    def __init__(self):
        self.samples = []

    def on_step_end(self, args, state, control, **kwargs):
        self.samples.append(_live_heap_bytes())


class WideRegression(torch.nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x, labels=None):
        out = self.linear(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads Linux memory statistics")
@pytest.mark.slow
def test_parquet_three_times_the_object_store_streams_in_bounded_memory(tmp_path, make_args):
    folder, features, rows_per_file, files = tmp_path / "big", 256, 8192, 30
    os.makedirs(folder)
    generator = np.random.default_rng(0)
    for number in range(files):  # one file at a time: the test itself never holds the whole set
        x = generator.standard_normal((rows_per_file, features), dtype=np.float32)
        pq.write_table(_table(x, x[:, :1]), folder / f"part-{number:03d}.parquet")
    dataset_bytes = files * rows_per_file * (features + 1) * 4
    assert dataset_bytes > 3 * OBJECT_STORE_BYTES
    probe = MemoryProbe()
    # batches of a quarter file (2 MB): what is in flight by design (the read-ahead queue, Ray's
    # prefetch, the batch in the step, each as Arrow and as tensors) stays far below the bound, which
    # a reader holding the dataset would cross (with whole-file batches it did not, under load)
    args = make_args(per_device_train_batch_size=rows_per_file // 4, num_train_epochs=1, logging_strategy="no")
    trainer = Trainer(model=WideRegression(features), args=args, train_dataset=stream(str(folder), shuffle=False),
                      callbacks=[probe])
    output = trainer.train()

    assert output.global_step == 4 * files  # every row went through, a quarter file per step
    # medians of the first and the last quarter of the steps: a reader that kept what it streamed
    # would grow by about half the dataset between them; one transient allocation elsewhere in the
    # process (seen once under CI load: a 98 MB spike with the steady heap flat) does not move them
    quarter = len(probe.samples) // 4
    growth = statistics.median(probe.samples[-quarter:]) - statistics.median(probe.samples[:quarter])
    assert growth < dataset_bytes / 4, f"heap grew by {growth / 1e6:.0f} MB while streaming {dataset_bytes / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------------
# Two real Ray Train workers
# ---------------------------------------------------------------------------------------------
class RowsPerRank(TrainerCallback):
    """Writes the row ids each rank trained on, per epoch, next to the checkpoints."""

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        module = getattr(model, "module", model)
        path = os.path.join(args.output_dir, f"rows-rank{args.process_index}-epoch{round(state.epoch)}.json")
        with open(path, "w") as handle:
            json.dump(module.seen, handle)
        module.seen.clear()


def _count_and_first(prediction):
    return {"count": len(prediction.predictions), "first": float(prediction.predictions[0][0])}


@pytest.mark.slow
def test_two_workers_read_equal_train_shards_and_evaluate_every_row_once(tmp_path, make_args):
    folder = _parquet_folder(tmp_path / "rows", _regression_table(43), rows_per_file=10)
    dev = stream(_regression_table(13, seed=4))  # 13 rows: not divisible by 2 ranks x batch 3
    args = make_args(output_dir=str(tmp_path / "out"), num_train_epochs=2, eval_strategy="epoch",
                     per_device_eval_batch_size=3, learning_rate=0.05, seed=4)
    trainer = Trainer(model=RowTrackingModel(), args=args, train_dataset=stream(folder), eval_dataset=dev,
                      compute_metrics=_count_and_first, callbacks=[RowsPerRank()],
                      # half a CPU each leaves one of the two CPUs to Ray Data's read tasks
                      scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}))
    output = trainer.train()

    assert output.global_step == 12  # 43 // 2 = 21 rows a rank: 6 batches of 4 an epoch
    for epoch in (1, 2):
        ranks = [json.loads((tmp_path / "out" / f"rows-rank{rank}-epoch{epoch}.json").read_text()) for rank in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 21 and not set(ranks[0]) & set(ranks[1])
    evals = [entry for entry in trainer.state.log_history if "eval_count" in entry]
    assert [entry["eval_count"] for entry in evals] == [13, 13]
    # the workers' last evaluation equals the driver's own pass over the stream with the final weights
    again = trainer.evaluate()
    assert again["eval_count"] == 13
    assert again["eval_first"] == pytest.approx(evals[-1]["eval_first"], abs=1e-6)
    assert again["eval_loss"] == pytest.approx(evals[-1]["eval_loss"], rel=1e-5)


def test_streaming_runs_and_evaluations_print_none_of_ray_datas_lines(make_args, caplog, capfd):
    caplog.set_level(logging.INFO)
    table = _table(RegressionDataset(24).x, RegressionDataset(24).y)
    trainer = Trainer(model=RegressionModel(), args=make_args(max_steps=3, eval_strategy="steps", eval_steps=3),
                      train_dataset=stream(table), eval_dataset=stream(table))
    trainer.train()
    trainer.evaluate()
    out, err = capfd.readouterr()
    ray_data = [record.getMessage() for record in caplog.records if record.name.startswith("ray.data")]
    assert ray_data == [] and "Running Dataset" not in out + err
    assert out.count("'eval_loss':") == 2
