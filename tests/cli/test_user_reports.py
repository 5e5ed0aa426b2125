"""What a model nobody here wrote met on the way (issue 30), each as a user would write the call: a model that expects
0-255 pixels or its own MEAN/STD, ``zoo list`` naming what to type, and a split that was silently ignored."""

import torch

from charex.cli import main
from charex.models import load_model


def test_normalization_names_0_255_and_mean_std(tmp_path) -> None:
    x = torch.rand(2, 3, 32, 32)
    plain = load_model("bundled:base", normalization="none")
    for norm, want in (("0-255", x * 255), ("0.5/0.25", (x - 0.5) / 0.25),
                       ("0.1,0.2,0.3/1,2,4", (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1))
                        / torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1))):
        m = load_model("bundled:base", normalization=norm)
        with torch.no_grad():
            assert torch.allclose(m(x), plain(want), atol=1e-4), norm


def test_normalization_reaches_the_models_without_one(tmp_path, capsys) -> None:
    """``--normalization`` (like ``--arch``) applies to the files whose card names none; bundled models keep theirs."""
    from safetensors.torch import save_file

    from charex.cli.common import load_options
    from charex.cli.common import load as cli_load
    import argparse

    weights = tmp_path / "w.safetensors"
    save_file(load_model("bundled:base").model.state_dict(), weights)
    out = tmp_path / "q.safetensors"
    assert main(["derive", "quantize", str(weights), "--arch", "cnn1", "--arch-kw", "width=0.25",
                 "--normalization", "0.5/0", "-o", str(out)]) == 2
    assert "every std > 0" in capsys.readouterr().err and not out.exists()
    args = argparse.Namespace(arch="cnn1", arch_kw=[("width", 0.25)], normalization="0-255", trust_pickle=False)
    assert load_options(args)["normalization"] == "0-255"
    assert cli_load(args, str(weights)).card["std"][0] == 1 / 255
    assert cli_load(args, "bundled:base").card["std"] == load_model("bundled:base").card["std"]
    from charex.errors import CharexError
    from charex.models.normalized import resolve_normalization

    for bad, words in (("0.5/0", "std > 0"), ("1,2/3", "one value or 3"), ("a/b", "MEAN/STD")):
        try:
            resolve_normalization(bad)
        except CharexError as e:
            assert words in str(e)
        else:
            raise AssertionError(bad)


def test_zoo_list_prints_the_name_to_type(capsys) -> None:
    assert main(["zoo", "list", "--cache", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert "bundled:base " in out and "bundled:derived-student" in out


def test_prune_refuses_a_split_it_would_not_use(tmp_path, capsys) -> None:
    out = tmp_path / "p.safetensors"
    assert main(["derive", "prune", "bundled:base", "--ratio", "0.5", "--data-split", "half-b", "-o", str(out)]) == 2
    assert "--finetune-epochs" in capsys.readouterr().err and not out.exists()
