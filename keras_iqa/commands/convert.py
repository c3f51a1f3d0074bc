"""`keras-iqa convert`: released PyTorch checkpoints -> Keras weights (MetaIQA official code). Needs the `[torch]` extra."""

from keras_iqa.commands import formatter

MODELS = ("metaiqa-official",)


def register(sub):
    p = sub.add_parser(
        "convert",
        help="convert an official PyTorch checkpoint to Keras weights",
        description="Convert a checkpoint released with a paper's official PyTorch code into the matching keras-iqa model.\n"
        "metaiqa-official: the MetaIQA scripts' `Net` (torchvision ResNet-18 incl. its ImageNet FC + the\n"
        "1000->1024->512->1 head with BatchNorm, PReLU, dropout and sigmoid), saved as a whole pickled model or a\n"
        "state dict. The output is a `.weights.h5` for\n"
        "`keras_iqa.create_model('metaiqa-official').load_weights(...)`, or a full `.keras` model.\n"
        "torch is needed only here: pip install 'keras-iqa[torch]'.",
        epilog="Examples:\n"
        "  keras-iqa convert metaiqa-official model_IQA/TID2013_IQA_Meta_resnet18.pt weights/metaiqa-tid.weights.h5\n"
        "  keras-iqa convert metaiqa-official TID2013_KADID10K_IQA_Meta_resnet18.pt metaiqa.keras --check\n"
        "Then, in Python:\n"
        "  m = keras_iqa.create_model('metaiqa-official'); m.load_weights('weights/metaiqa-tid.weights.h5')",
        formatter_class=formatter(),
    )
    p.add_argument("model", choices=MODELS, help="which released model the checkpoint belongs to")
    p.add_argument("checkpoint", help="the PyTorch checkpoint (.pt / .pth)")
    p.add_argument("out", help="output: NAME.weights.h5 (weights) or NAME.keras (whole model)")
    p.add_argument("--check", action="store_true",
                   help="also run torch and Keras on one random 224x224 batch in eval mode and report the largest difference "
                        "(needs the checkpoint to be a whole pickled model whose classes import, or skips with a note)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from keras_iqa.models.metaiqa import convert_official_checkpoint

    out = str(args.out)
    if not (out.endswith(".weights.h5") or out.endswith(".keras")):
        raise ValueError(f"output {out!r} must end with .weights.h5 or .keras")
    model, report = convert_official_checkpoint(args.checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out[: -len(".weights.h5")] + ".tmp.weights.h5" if out.endswith(".weights.h5") else out[:-6] + ".tmp.keras"
    if out.endswith(".keras"):
        model.save(tmp)
    else:
        model.save_weights(tmp)
    os.replace(tmp, out)
    print(f"converted {report['loaded']} tensors from {args.checkpoint} -> {out}")
    if report["ignored"]:
        print(f"ignored {len(report['ignored'])} checkpoint entries: {', '.join(report['ignored'][:8])}")
    if args.check:
        _check(args.checkpoint, model)
    return 0


def _check(path, model) -> None:
    import numpy as np
    import torch

    try:
        net = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # classes not importable, or a bare state dict
        print(f"--check skipped: cannot rebuild the torch model from {path} ({type(e).__name__})")
        return
    if not isinstance(net, torch.nn.Module):
        print("--check skipped: the checkpoint is a state dict, not a whole model")
        return
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    xt = torch.from_numpy(((x / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype("float32"))
    net.eval()
    with torch.no_grad():
        ref = net(xt).numpy().reshape(-1)
    got = np.asarray(model(x, training=False)).reshape(-1)
    print(f"--check: max |torch - keras| = {np.abs(ref - got).max():.2e} on 2 random images")
