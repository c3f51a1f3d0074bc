"""`keras-iqa convert`: an official PyTorch checkpoint -> a keras-iqa preset folder (`keras_iqa.converters`). Needs torch."""

import shlex

from keras_iqa.commands import formatter

EPILOG = """\
Formats:
  metaiqa  MetaIQA's released network (torchvision ResNet-18 with its ImageNet FC + the 1000-1024-512-1 head with
           BatchNorm, PReLU, dropout and sigmoid) -> card metaiqa-official
  reqa     REQA's official REQANet (ResNet-50, ConvLSTM feedback on three scales, transformer, MLP-III) -> card reqa

CHECKPOINT is a state dict: a .pt/.pth/.bin file written by torch.save (possibly nested under "state_dict", "model", ...,
with or without DataParallel's "module." prefix) or a .safetensors file. It is read with torch.load(weights_only=True):
nothing in the file is executed. A whole pickled model (torch.save(model); MetaIQA's released .pt files are) is refused
with the reason and the one-liner that makes a state dict of it on a machine you trust (docs/converters.md).

Examples:
  keras-iqa convert reqa reqa_koniq.state_dict.pt --out presets/reqa-koniq
  keras-iqa convert metaiqa TID2013_IQA_Meta_resnet18.state_dict.pt --out presets/metaiqa-tid2013
  keras-iqa convert reqa small.pt --out presets/reqa-small --card reqa-tiny
Then score photos with the preset, or load it in Python:
  keras-iqa score presets/reqa-koniq photos/ --scores scores.csv
  model = keras_iqa.from_preset("presets/reqa-koniq")

Exit status 2 on errors (unreadable or refused checkpoint, missing tensors, shapes that do not fit the card).
"""


def register(sub):
    from keras_iqa.converters import CONVERTERS

    p = sub.add_parser(
        "convert",
        help="convert an official PyTorch checkpoint into a keras-iqa preset",
        description="Convert a checkpoint of a paper's official PyTorch network into the matching keras-iqa model and "
                    "write it as a preset folder (config.json, model.weights.h5, metadata.json recording the checkpoint's "
                    "SHA-256 and this command). torch is needed only here: pip install 'keras-iqa[torch]'.",
        epilog=EPILOG,
        formatter_class=formatter(),
    )
    p.add_argument("family", choices=sorted(CONVERTERS), help="which official network the checkpoint belongs to")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the state dict (.pt / .pth / .bin / .safetensors)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="the preset folder to write (created; files in it "
                   "are replaced)")
    p.add_argument("--card", metavar="NAME",
                   help="registry card to convert into (default: metaiqa-official / reqa; a smaller card only for a "
                        "checkpoint of that size)")
    p.add_argument("--allow-unused", action="store_true",
                   help="convert even if the checkpoint holds tensors the network does not have (they are dropped and "
                        "listed); by default that is an error, since it means another or a modified network")
    p.set_defaults(func=run)


def run(args) -> int:
    from keras_iqa.converters import CONVERTERS, convert_to_preset

    card = args.card or CONVERTERS[args.family][1]
    command = shlex.join(["keras-iqa", "convert", args.family, str(args.checkpoint), "--out", str(args.out), "--card", card]
                         + (["--allow-unused"] if args.allow_unused else []))
    folder, report = convert_to_preset(args.family, args.checkpoint, args.out, card=card, strict=not args.allow_unused,
                                       command=command)
    print(f"converted {report['tensors']} tensors of {args.checkpoint} (sha256 {report['sha256'][:12]}...) into card {card} "
          f"-> preset {folder}")
    if report["unused"]:
        print(f"not used: {len(report['unused'])} tensors ({', '.join(report['unused'][:6])})")
    print(f"load it with keras_iqa.from_preset({str(folder)!r})")
    return 0
