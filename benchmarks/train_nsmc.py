"""Train the classifier on NSMC movie reviews and compare its figures with the targets.

Trains on every review dated before 2014-10-01 (rating 1-4 negative, 9-10 positive, 5-8 left
out), exports the SavedModel, and evaluates the exported ``serving_default`` signature on the
reviews of 2014-10-01 to 2014-12-31. Run from the repository root::

    .venv/bin/python benchmarks/train_nsmc.py [--output-dir DIR] [--max-epochs N] [--refit-on-all-examples]

It prints "skipped: ../shared/data/nsmc not found" and exits 0 when the data is absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "nsmc"
DATA_FILE = DATA_DIR / "reviews_2003_2014.parquet"
TEST_START = dt.date(2014, 10, 1)
TEST_END = dt.date(2014, 12, 31)
SERVE_BATCH_ROWS = 1024
SEED = 1234

TARGET_BALANCED_ACCURACY = 0.88
TARGET_TRAINING_SECONDS = 600
TARGET_MODEL_BYTES = 100 * 10**6
TARGET_BATCH_MEMORY_BYTES = 250 * 2**20


def load_labelled_reviews():
    """Return the reviews with a rating outside 5-8, with a ``label`` column of negative or positive."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    reviews = pq.read_table(DATA_FILE, columns=["review_id", "text", "rating", "review_date"])
    rating = reviews.column("rating")
    reviews = reviews.filter(pc.or_(pc.less_equal(rating, 4), pc.greater_equal(rating, 9)))
    label = pc.if_else(pc.greater_equal(reviews.column("rating"), 9), "positive", "negative")
    return reviews.append_column("label", label)


def serve_in_batches(saved_model_dir: Path, texts: list[str]) -> tuple[list[str], float]:
    """Run the exported signature on ``texts`` in batches and return the labels and rows per second."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    serve(text=tf.constant(texts[:1]))
    labels: list[str] = []
    started = time.monotonic()
    for offset in range(0, len(texts), SERVE_BATCH_ROWS):
        outputs = serve(text=tf.constant(texts[offset : offset + SERVE_BATCH_ROWS]))
        labels.extend(label.decode() for label in outputs["predicted_label"].numpy())
    return labels, len(texts) / (time.monotonic() - started)


def print_figure(name: str, value: str, target: str, met: bool) -> None:
    print(f"{name:<34} {value:>16}   target {target:<12} {'met' if met else 'NOT MET'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", help="version folder to write (default: a temporary folder)")
    parser.add_argument("--max-epochs", type=int, default=8, help="most training epochs")
    parser.add_argument("--class-weighting", choices=("none", "balanced"), default="balanced", help="class weighting in training")
    parser.add_argument(
        "--refit-on-all-examples",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after early stopping, fit again on every training example, validation slice included (default: off)",
    )
    args = parser.parse_args()
    if not DATA_FILE.is_file():
        print("skipped: ../shared/data/nsmc not found")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from textclf.preflight import check_saved_model
    from textclf.training.train import evaluate_predictions, train_and_export

    reviews = load_labelled_reviews()
    dates = reviews.column("review_date")
    train_examples = reviews.filter(pc.less(dates, pa.scalar(TEST_START)))
    test_examples = reviews.filter(pc.and_(pc.greater_equal(dates, pa.scalar(TEST_START)), pc.less_equal(dates, pa.scalar(TEST_END))))
    print(f"training examples {train_examples.num_rows:,}, test examples {test_examples.num_rows:,}")

    output_dir = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="textclf-nsmc-"))
    metrics = train_and_export(
        train_examples,
        output_dir,
        date_column="review_date",
        max_epochs=args.max_epochs,
        seed=SEED,
        class_weighting=args.class_weighting,
        trained_before=TEST_START,
        refit_on_all_examples=args.refit_on_all_examples,
    )
    saved_model_dir = output_dir / "saved_model"
    check = check_saved_model(str(saved_model_dir))

    texts = [text or "" for text in test_examples.column("text").to_pylist()]
    predicted, rows_per_second = serve_in_batches(saved_model_dir, texts)
    classes = metrics["classes"]
    index = {name: position for position, name in enumerate(classes)}
    true_ids = np.array([index[label] for label in test_examples.column("label").to_pylist()])
    predicted_ids = np.array([index[label] for label in predicted])
    evaluation = evaluate_predictions(true_ids, predicted_ids, classes)

    print(
        f"\nSavedModel {saved_model_dir}; epochs run {metrics['epochs_run']}, class weighting {args.class_weighting}, "
        f"refit on all examples {'on' if args.refit_on_all_examples else 'off'}"
    )
    print(
        f"validation slice (from {metrics['validation_start_date']}): accuracy {metrics['accuracy']:.4f}, "
        f"balanced {metrics['balanced_accuracy']:.4f}, balanced before logit offsets {metrics['balanced_accuracy_before_offsets']:.4f}; "
        f"logit offsets {metrics['logit_offsets']}"
    )
    print_figure("training seconds", f"{metrics['training_seconds']:.0f}", f"<= {TARGET_TRAINING_SECONDS}", metrics["training_seconds"] <= TARGET_TRAINING_SECONDS)
    print_figure("model bytes", f"{metrics['model_bytes']:,}", "<= 100 MB", metrics["model_bytes"] <= TARGET_MODEL_BYTES)
    memory = check.batch_memory_bytes
    print_figure(
        "serve memory per 1,024 rows", f"{memory:,}" if memory is not None else "not measured", "<= 250 MiB",
        memory is not None and memory <= TARGET_BATCH_MEMORY_BYTES,
    )
    print_figure("serving rows/s (batches of 1,024)", f"{rows_per_second:,.0f}", "(none)", True)
    print_figure("test accuracy, natural mix", f"{evaluation['accuracy']:.4f}", "(none)", True)
    print_figure("test accuracy, class-balanced", f"{evaluation['balanced_accuracy']:.4f}", f">= {TARGET_BALANCED_ACCURACY}", evaluation["balanced_accuracy"] >= TARGET_BALANCED_ACCURACY)
    print("class-balanced accuracy = mean of the per-class recalls")
    for name, figures in evaluation["per_class"].items():
        print(f"  {name}: precision {figures['precision']:.4f}, recall {figures['recall']:.4f}, support {figures['support']:,}")
    print(f"preflight: {'OK' if check.ok else '; '.join(check.problems)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
