"""Small random-weight models saved the way users' model folders hold the real ones."""

from __future__ import annotations

from pathlib import Path


def tiny_demucs_repo(folder: Path, name: str = "tiny", seed: int = 0) -> Path:
    """A local Demucs repo with one small HTDemucs (`<name>.th`) and a bag of it (`<name>_bag.yaml`).

    Built like Demucs' own packages (klass, args, kwargs, state) so it loads through
    demucs.pretrained.get_model(repo=...), the path muscat uses for the real models.
    """
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # depth 4, as the real htdemucs: each layer less makes the transformer attend over 4x longer
    # sequences (depth 3 ran 3x slower, 0.4 s of CPU per second of audio; depth 2 8x slower again).
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1,
                     segment=1, bottom_channels=0, nfft=1024)
    args, kwargs = model._init_args_kwargs
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None),
                "training_args": {}}, folder / f"{name}.th")
    (folder / f"{name}_bag.yaml").write_text(f"models: ['{name}']\n")
    return folder


def adtof_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint in the format ADTOF's PyTorch port writes."""
    import torch

    from extractors.drums import build_model, filterbank

    torch.manual_seed(seed)
    model = build_model(filterbank().shape[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_weights": model.state_dict(), "model_info": {"name": "Frame_RNN", "test": True}}, path)
    return path
