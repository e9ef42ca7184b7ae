"""A minimal objective: a small CNN on scikit-learn's 8x8 digits, its architecture searched by hpo.

A plain function of the trial context that reports each epoch and returns its final metrics; the study
file (digits-cnn.yaml) names it as `digits_cnn.py:train` and gives the metric and its direction.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def make_model(channels: int, conv_layers: int, kernel_size: int, dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    width = 1
    for _ in range(conv_layers):
        layers += [nn.Conv2d(width, channels, kernel_size, padding="same"), nn.ReLU()]
        width = channels
    return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * 16, 10))


def train(ctx):
    hp = ctx.hyperparameters  # what the study file searched or fixed
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=ctx.data.val_fraction, random_state=ctx.data.split_seed, stratify=y
    )

    torch.manual_seed(ctx.seed)
    model = make_model(hp["channels"], hp["conv_layers"], hp["kernel_size"], hp["dropout"]).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    loss_fn = nn.CrossEntropyLoss()
    best = 0.0
    for epoch in range(hp["epochs"]):
        model.train()
        for batch in torch.randperm(len(x_train)).split(hp["batch_size"]):
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_acc = (logits.argmax(1) == y_val).float().mean().item()
        # Logged to MLflow (step=epoch) and shown to the pruner, which may stop the trial here.
        ctx.report(epoch, {"train_loss": loss.item(), "val_loss": loss_fn(logits, y_val).item(), "val_acc": val_acc})
        best = max(best, val_acc)
    return {"val_acc": best}
