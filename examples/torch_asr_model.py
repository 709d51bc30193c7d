# SPDX-License-Identifier: MIT
"""The architecture of examples/torch_asr_pool.py's model, which
examples/torch_asr_build.py writes and the pool's workers build:
torchaudio's wav2vec2_base with a CTC head of VOCAB characters (94.4 M
parameters, 378 MB of fp32 weights)."""
import torch
import torchaudio

VOCAB = 32
_INITS = ("uniform_", "normal_", "constant_", "ones_", "zeros_",
          "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
          "xavier_normal_", "trunc_normal_")


def asr_model(initialise=True):
    """The model, its weight-normed positional convolution folded into one
    plain weight (so every weight is a tensor of the state dict: none is
    derived again at each pass).  Without initialise the weights are left
    as allocated, never written, so their pages cost nothing: for a model
    whose every tensor is replaced next."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITS}
    try:
        if not initialise:
            for name in _INITS:
                setattr(torch.nn.init, name, lambda tensor, *a, **k: tensor)
        model = torchaudio.models.wav2vec2_base(aux_num_out=VOCAB)
    finally:
        for name, init in saved.items():
            setattr(torch.nn.init, name, init)
    torch.nn.utils.remove_weight_norm(
        model.encoder.transformer.pos_conv_embed.conv)
    return model
