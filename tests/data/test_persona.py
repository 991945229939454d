import pytest

from helpers.data import persona
from helpers.notebooks.setup import ROOT


def test_shipped_persona_loads_with_overrides():
    p = persona.load("NoteBooks/JordanPeterson", questions_per_passage=3, qa_source=None)
    assert p.name == "Jordan B. Peterson" and p.slug == "JordanPeterson"
    assert p.books == ROOT / "Books" / "JordanPeterson"
    assert p.data.questions_per_passage == 3 and p.data.qa_source == "anthropic"
    assert p.dataset_dir == ROOT / "qa_dataset" / "JordanPeterson"
    assert "Peterson" in p.system_prompt


def test_second_persona_is_a_copied_config(tmp_path):
    (tmp_path / "persona.toml").write_text(
        'name = "Ada"\nbooks = "/data/ada"\nsystem_prompt = "You are Ada."\n[data]\nwords = 200\n')
    p = persona.load(tmp_path)
    assert (p.name, str(p.books), p.data.words, p.data.overlap) == ("Ada", "/data/ada", 200, 50)


@pytest.mark.parametrize("body,match", [
    ('name = "A"\nbooks = "b"\nsystem_prompt = "s"\ncolour = "red"\n', "unknown setting.*colour"),
    ('name = "A"\nbooks = "b"\nsystem_prompt = "s"\n[data]\nwordz = 3\n', r"data\.wordz"),
    ('name = "A"\nbooks = "b"\n', "system_prompt` is missing"),
    ('name = "A"\nbooks = "b"\nsystem_prompt = "s"\n[data]\nqa_source = "gpt"\n', "qa_source='gpt'"),
    ('name = "A" books', "not valid TOML"),
])
def test_bad_configs_are_named(tmp_path, body, match):
    (tmp_path / "persona.toml").write_text(body)
    with pytest.raises(persona.PersonaError, match=match):
        persona.load(tmp_path)


def test_missing_config_says_what_to_copy(tmp_path):
    with pytest.raises(persona.PersonaError, match="Copy NoteBooks/JordanPeterson/persona.toml"):
        persona.load(tmp_path)


def test_train_settings_sit_between_the_profile_and_the_parameters(tmp_path):
    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "persona.toml").write_text('name = "P"\nbooks = "b"\nsystem_prompt = "s"\n'
                                         '[train]\nlearning_rate = 1e-4\nlora_r = 8\n')
    p = persona.load(folder)
    got = p.train_settings(learning_rate=None, lora_r=64, epochs=None)
    assert got == {"learning_rate": 1e-4, "lora_r": 64, "epochs": None}  # None: the profile's
    with pytest.raises(persona.PersonaError, match="unknown training setting.*lr"):
        p.train_settings(lr=1)
    (folder / "persona.toml").write_text('name = "P"\nbooks = "b"\nsystem_prompt = "s"\n[train]\nlr = 1\n')
    with pytest.raises(persona.PersonaError, match=r"train\.lr.*under \[train\]: epochs"):
        persona.load(folder)


def test_smoke_mode_substitutes_what_would_cost_or_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNING_WORKDIR", str(tmp_path))
    real = persona.load("NoteBooks/JordanPeterson", smoke=False)
    assert real.data.qa_source == "anthropic" and not real.substitutions
    smoke = persona.load("NoteBooks/JordanPeterson", smoke=True)
    assert smoke.data.qa_source == "rule" and smoke.books == persona.SAMPLE_BOOK
    assert len(smoke.substitutions) == 2 and "instead of 'anthropic'" in smoke.substitutions[0]
    assert "Smoke mode substituted books" in smoke.substitution_note()
    # sets made from substituted data never land where a real run would reuse them
    assert smoke.dataset_dir == tmp_path / "qa_dataset" / "JordanPeterson-smoke"
    monkeypatch.setenv("FINETUNING_SMOKE", "1")
    assert persona.load("NoteBooks/JordanPeterson").substitutions == smoke.substitutions
    # what is given explicitly is kept
    chosen = persona.load("NoteBooks/JordanPeterson", qa_source="local", books=str(tmp_path))
    assert chosen.data.qa_source == "local" and chosen.books == tmp_path and not chosen.substitutions
    # a persona that already asks nothing and has its books is not touched
    maren = persona.load("NoteBooks/MarenHolloway")
    assert not maren.substitutions and maren.dataset_dir.name == "MarenHolloway"
