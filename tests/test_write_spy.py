"""The spy behind every "only the main process writes" check sees each way the package writes a file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from helpers import TESTS_DIR, accelerate_launch, assert_only_rank0_wrote, cpu_env, tiny_config, train_script


pytestmark = pytest.mark.integration

EVERY_ROUTE = textwrap.dedent("""
    import json, os, shutil, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import write_spy
    root, record = Path(sys.argv[1]), Path(sys.argv[2])
    write_spy.install(root, record)
    import torch
    from safetensors.torch import save_file      # bound after install
    import hftransfer.utils.io as io             # binds save_file at its import
    t = {{"w": torch.zeros(2)}}
    open(root / "open.txt", "w").close()
    (root / "text.txt").write_text("x")
    (root / "bytes.bin").write_bytes(b"x")
    with (root / "path_open.txt").open("a") as f:
        f.write("x")
    os.close(os.open(root / "os_open.bin", os.O_WRONLY | os.O_CREAT))
    torch.save(t, root / "torch.pt")
    with open(root / "handle.pt", "wb") as f:
        torch.save(t, f)
    save_file(t, str(root / "direct.safetensors"))
    io.save_state_dict(t, root / "io.safetensors")
    (root / "tmp.txt").write_text("x")
    os.replace(root / "tmp.txt", root / "replaced.txt")
    os.mkdir(root / "folder")
    shutil.copyfile(root / "text.txt", root / "copied.txt")
    (root / "text.txt").read_text()              # reads are not writes
    open(Path(sys.argv[3]) / "outside.txt", "w").close()  # outside the watched folder
""")


def test_the_spy_records_every_write_route_and_no_read(tmp_path):
    root, outside = tmp_path / "watched", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    script = tmp_path / "routes.py"
    script.write_text(EVERY_ROUTE.format(tests=str(TESTS_DIR)))
    subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "record.json"), str(outside)],
                   check=True, capture_output=True, env=cpu_env())
    written = {p.rsplit("/", 1)[-1] for p in json.loads((tmp_path / "record.json").read_text())}
    assert written == {"open.txt", "text.txt", "bytes.bin", "path_open.txt", "os_open.bin", "torch.pt", "handle.pt",
                       "direct.safetensors", "io.safetensors", "tmp.txt", "replaced.txt", "folder", "copied.txt"}


def test_a_deliberate_rank1_write_is_caught(tmp_path):
    # The check every 2-process test relies on fails when rank 1 writes a file the way the package writes
    # metrics.json (Path.write_text) and weights (safetensors).
    rogue = """
        import hftransfer
        from hftransfer.training import Callback
        from hftransfer.utils.io import save_state_dict
        class Rogue(Callback):
            def on_train_end(self, trainer, result):
                if trainer.accelerator.process_index == 1:
                    (trainer.output_dir / "rank1.json").write_text("{}")
                    save_state_dict({"w": next(trainer.model.parameters()).detach().cpu()},
                                    trainer.output_dir / "rank1.safetensors")
        import functools
        hftransfer.train = functools.partial(hftransfer.train, callbacks=[Rogue()])
    """
    script = tmp_path / "rogue.py"
    script.write_text(train_script(rogue))
    (tmp_path / "w").mkdir()
    config = tiny_config(tmp_path / "run", epochs=1)
    accelerate_launch(script, json.dumps(config), str(tmp_path / "w"))
    with pytest.raises(AssertionError, match="rank 1 wrote files"):
        assert_only_rank0_wrote(tmp_path / "w")
    rank1 = json.loads((tmp_path / "w" / "writes_rank1.json").read_text())
    assert [p.rsplit("/", 1)[-1] for p in rank1] == ["rank1.json", "rank1.safetensors"]
