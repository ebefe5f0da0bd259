"""PyTorch contenders of the throughput benchmark: ``torch-loop`` and the floor ``torch-compile``.

``torch-loop`` is a plain loop in the style of pytorch/examples ``vae/main.py``;
``torch-compile`` is the same loop with ``torch.compile(model)``.
"""

from throughput_common import HIDDEN, LATENT_DIM, PIXELS


def make_torch_loop(x_train, args, compile_model=False):
    """``(train_epoch, test_negative_elbo)`` for the plain PyTorch loop.

    ``compile_model``: wrap the model in ``torch.compile`` (TorchInductor, which on a
    CPU generates C++ and needs a compiler on the machine); the loop is unchanged.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812 (the name every PyTorch reader knows)
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder_hidden = nn.Linear(PIXELS, HIDDEN)
            self.to_z_mean = nn.Linear(HIDDEN, LATENT_DIM)
            self.to_z_log_var = nn.Linear(HIDDEN, LATENT_DIM)
            self.decoder_hidden = nn.Linear(LATENT_DIM, HIDDEN)
            self.to_logits = nn.Linear(HIDDEN, PIXELS)

        def encode(self, x):
            h = F.relu(self.encoder_hidden(x))
            return self.to_z_mean(h), self.to_z_log_var(h)

        def reparameterize(self, z_mean, z_log_var):
            return z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)

        def decode(self, z):
            return self.to_logits(F.relu(self.decoder_hidden(z)))

        def forward(self, x):
            z_mean, z_log_var = self.encode(x.view(-1, PIXELS))
            return self.decode(self.reparameterize(z_mean, z_log_var)), z_mean, z_log_var

    def loss_function(logits, x, z_mean, z_log_var):
        reconstruction = F.binary_cross_entropy_with_logits(
            logits, x.view(-1, PIXELS), reduction="sum"
        )
        # Kingma & Welling 2014, Appendix B
        kl = -0.5 * torch.sum(1 + z_log_var - z_mean.pow(2) - z_log_var.exp())
        return reconstruction + kl  # summed over the batch, as in pytorch/examples

    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    if compile_model:
        model = torch.compile(model)
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train)),
        batch_size=args.batch_size,
        shuffle=True,
        generator=generator,
    )

    def train_epoch():
        model.train()
        for (x,) in loader:
            x = x.to(device)
            optimizer.zero_grad()
            logits, z_mean, z_log_var = model(x)
            loss = loss_function(logits, x, z_mean, z_log_var)
            loss.backward()
            optimizer.step()
        loss.item()

    def test_negative_elbo(x_test):
        model.eval()
        with torch.no_grad():
            x = torch.from_numpy(x_test).to(device)
            logits, z_mean, z_log_var = model(x)
            return loss_function(logits, x, z_mean, z_log_var).item() / len(x_test)

    return train_epoch, test_negative_elbo


def make_torch_compile(x_train, args):
    """``(train_epoch, test_negative_elbo)``: the plain PyTorch loop with ``torch.compile``."""
    return make_torch_loop(x_train, args, compile_model=True)
