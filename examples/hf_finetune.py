"""Fine-tune a small BERT classifier the Hugging Face way; the one raytrainer line is the import of
``HfArgumentParser``, ``Trainer`` and ``TrainingArguments`` (swap it back to ``transformers`` and
the script runs on ``transformers.Trainer``, with the same result).

    python examples/hf_finetune.py [--output_dir out/hf_finetune] [--num_train_epochs 3] ...

Nothing is downloaded: the model is built from a ``BertConfig`` (random weights) and the tokenizer
from a word list, and the task is made up here: a sentence holds one to three words of one
sentiment among neutral words, and the label is that sentiment. Every TrainingArguments field can
be given on the command line.
"""

import sys

import numpy as np
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerFast

from raytrainer import HfArgumentParser, Trainer, TrainingArguments  # was: from transformers import ...

POSITIVE = ["good", "great", "fine", "lovely", "bright", "happy", "calm", "warm"]
NEGATIVE = ["bad", "awful", "poor", "gloomy", "sad", "angry", "cold", "dull"]
NEUTRAL = ["the", "a", "day", "film", "house", "road", "was", "is", "very", "quite", "and", "so", "it", "this"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def make_sentences(count: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count)
    texts = []
    for label in labels:
        words = list(rng.choice(POSITIVE if label else NEGATIVE, rng.integers(1, 4)))
        words += list(rng.choice(NEUTRAL, rng.integers(2, 8)))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return Dataset.from_dict({"text": texts, "label": [int(label) for label in labels]})


def accuracy(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main(argv=None):
    defaults = ["--output_dir", "out/hf_finetune", "--num_train_epochs", "2", "--learning_rate", "3e-3",
                "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
                "--eval_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", "1",
                "--logging_steps", "10", "--warmup_steps", "10", "--report_to", "none", "--seed", "0"]
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(defaults + list(argv or []))
    tokenizer = build_tokenizer()
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config)

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=32)

    train = make_sentences(512, seed=1).map(tokenize, batched=True)
    dev = make_sentences(200, seed=2).map(tokenize, batched=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
    train_result = trainer.train()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_model()
    print(f"dev accuracy {metrics['eval_accuracy']:.3f} after {train_result.global_step} steps "
          f"(model and tokenizer in {args.output_dir})")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
