"""A Hugging Face Trainer script logged by tuitrain's Trainer callback: a tiny BERT built from a config (no
download of weights or data), classifying synthetic token sequences; seconds on a CPU.

python examples/transformers_example.py --runs-dir runs --label lr=5e-4
tuitrain watch runs        # in another terminal: train/loss, eval/loss at each epoch end, the status
tuitrain compare runs

--fail-at-step N raises an exception at step N (the run ends failed).
"""

import argparse

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from tuitrain.integrations.transformers import TuitrainCallback

parser = argparse.ArgumentParser()
parser.add_argument("--runs-dir", default="runs")
parser.add_argument("--label", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=5e-4)
parser.add_argument("--samples", type=int, default=512)
parser.add_argument("--output-dir", default="/tmp/tuitrain-transformers-example")
parser.add_argument("--fail-at-step", type=int, default=None)
args = parser.parse_args()

VOCAB, LENGTH = 50, 16


class Tokens(torch.utils.data.Dataset):
    """Random token sequences, labelled 1 when token 7 occurs more often than token 8: learnable from counts."""

    def __init__(self, samples: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (samples, LENGTH), generator=g)
        self.labels = ((self.ids == 7).sum(1) > (self.ids == 8).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": self.labels[i],
        }


class FailAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if args_.fail_at_step is not None and state.global_step >= args_.fail_at_step:
            raise RuntimeError(f"failing on purpose at step {state.global_step}")


args_ = args
config = BertConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=LENGTH,
    num_labels=2,
)
torch.manual_seed(0)
model = BertForSequenceClassification(config)
training = TrainingArguments(
    output_dir=args.output_dir,
    num_train_epochs=args.epochs,
    learning_rate=args.lr,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    eval_strategy="epoch",
    logging_steps=4,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    disable_tqdm=True,
    seed=0,
)
trainer = Trainer(
    model=model,
    args=training,
    train_dataset=Tokens(args.samples, seed=1),
    eval_dataset=Tokens(256, seed=2),
    callbacks=[TuitrainCallback(runs_dir=args.runs_dir, label=args.label or f"lr={args.lr:g}"), FailAt()],
)
trainer.train()
