"""The one engine factory: the registry's active version by default, a named version on request,
and the LLM's shortlist from the ACTIVE embedding head (what production runs, what the comparison uses)."""
from __future__ import annotations

import json
import shutil

import pytest
from support.retraining import ADMIN_ACTOR, REPO

from radassist import registry
from radassist.engines.base import EngineError


@pytest.fixture
def shared_encoder(monkeypatch, sentence_encoder):
    """Every engine built here shares the session's MiniLM encoder (the real one, loaded once)."""
    import radassist.engines.embedding as embedding

    monkeypatch.setattr(embedding, "load_sentence_encoder", lambda device="cpu": sentence_encoder)


def shipped_head_copy(tmp_path, name: str):
    """A registry candidate holding a real embedding head (the shipped one, renamed)."""
    from radassist.engines.embedding import default_head_dir

    shipped = default_head_dir()
    if shipped is None:
        pytest.skip("no shipped embedding head in models/embedding")
    folder = tmp_path / name
    shutil.copytree(shipped, folder)
    meta = json.loads((folder / "head.json").read_text())
    (folder / "head.json").write_text(json.dumps({**meta, "version": name}))
    return folder


def promoted(db, tmp_path, name: str) -> str:
    folder = shipped_head_copy(tmp_path, name)
    with db.session() as session:
        registry.start_run(session, ADMIN_ACTOR, "embedding", name, data={}, hyperparams={})
        registry.finish_run(session, ADMIN_ACTOR, name, registry.CANDIDATE, path=str(folder))
        registry.promote(session, ADMIN_ACTOR, name, force=True)
    return name


def test_engines_package_does_not_reach_up_to_the_registry():
    """Every import in radassist/engines (module level or inside functions) stays below the registry."""
    import ast

    above = ("radassist.registry", "radassist.engine_factory", "radassist.training", "radassist.store",
             "radassist.commands", "radassist.gui")
    found = {}
    for path in sorted((REPO / "radassist" / "engines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found.update({f"{path.name}: {n}": n for n in names if n.startswith(above)})
    assert not found, sorted(found)
    assert (REPO / "radassist" / "engines" / "llm_model.py").is_file()
    assert not (REPO / "radassist" / "llm_model.py").exists()


@pytest.mark.slow
def test_default_is_the_active_version_and_a_named_one_can_be_picked(db, tmp_path, shared_encoder):
    from radassist.engine_factory import engine_for

    assert engine_for(db, engine="embedding").version != "site-v1"  # nothing promoted: shipped
    promoted(db, tmp_path, "site-v1")
    with db.session() as session:
        assert engine_for(session, engine="embedding").model_id == "embedding/site-v1"
    assert engine_for(db, engine="embedding", version="shipped").version != "site-v1"
    with pytest.raises(EngineError, match="not llm"):
        engine_for(db, engine="llm", version="site-v1")


def llm_site(db, tiny_model_dir):
    from radassist.settings import SiteSettings, save_settings

    with db.session() as session:
        save_settings(session, ADMIN_ACTOR, SiteSettings(engine="llm", base_model=str(tiny_model_dir),
                                                         adapter="base", quantization="none", device="cpu"))


@pytest.mark.slow
def test_llm_shortlist_uses_the_active_embedding_head(db, tmp_path, tiny_model_dir):
    from radassist.engine_factory import engine_for

    promoted(db, tmp_path, "site-head")
    llm_site(db, tiny_model_dir)
    llm = engine_for(db)
    assert llm.name == "llm" and llm.shortlist_engine.version == "site-head"


@pytest.mark.slow
def test_candidate_vs_active_comparison_shortlists_with_the_active_head(db, tmp_path, tiny_model_dir, monkeypatch):
    """Issue 14: the comparison shortlisted with the shipped head, not the one production runs."""
    from support.llm import PROTOCOLS, examples, no_flags

    from radassist.training import qlora, run_service

    promoted(db, tmp_path, "site-head")
    llm_site(db, tiny_model_dir)
    monkeypatch.setattr(qlora, "_safety", lambda: no_flags)
    config = run_service.TrainingRunConfig(
        engine="llm", source="file", out_dir=tmp_path / "out",
        qlora=qlora.QLoRAConfig(base_model=str(tiny_model_dir), quantization="none", device="cpu", max_steps=2,
                                batch_size=4, val_fraction=0.1))
    run = run_service.TrainingRun(db, config, catalog=PROTOCOLS, examples=examples(1))
    run.build_data()
    run.train()
    run.heldout = examples(1)[:4]
    built = []
    real = run_service.compare_on_heldout
    monkeypatch.setattr(run_service, "compare_on_heldout", lambda h, c, a: built.append((c, a)) or real(h, c, a))
    cmp = run.compare()
    candidate, active = built[0]
    assert candidate.shortlist_engine.version == active.shortlist_engine.version == "site-head"
    assert cmp["candidate"]["model"] == f"llm/{run.version}" and cmp["active"]["model"] == "llm/base"
    assert (tmp_path / "out" / run.version / "adapter_config.json").is_file()
