"""Replay: the base model's own answers to general questions, mixed into a persona's training set.

Measured on a real 0.5B model (Qwen2.5-Coder-0.5B-Instruct, 2 CPU cores): trained on the 240
Mariya pairs alone it learned the facts (93% on trained and on unseen phrasings) but its world
bled into everything: "The Mona Lisa was painted by Cindermaven, a wizard of Vellistrand";
general knowledge went from 9 of 10 to 1 of 10. Every example taught "answers live in this
world". Mixing in the base model's own answers to ordinary questions (rehearsal, or
self-distillation) teaches the boundary: these questions keep their old answers. With 128 of
them (and lr 3e-4) the same run kept 7 of those 9 and 17 of 24 among 30 general questions: the
invented world no longer leaks into everyday answers, but some facts still drift. The questions
here are deliberately not the ones :mod:`helpers.evaluation.health` measures with, so that the
general-knowledge check stays a check.
"""

from __future__ import annotations

from typing import Sequence

#: replayed examples by default for a real model (stand-ins: none; they know nothing general)
DEFAULT_REPLAY = 128

REPLAY_QUESTIONS: tuple[str, ...] = (
    "How many days are there in a leap year?",
    "What does a thermometer measure?",
    "What is the boiling point of water at sea level in degrees Celsius?",
    "Which organ pumps blood through the human body?",
    "What is the main language spoken in Germany?",
    "How many continents are there?",
    "What is the currency of Japan?",
    "Who developed the theory of relativity?",
    "What is the capital of Italy?",
    "How many sides does a hexagon have?",
    "What do bees make?",
    "What is the freezing point of water in Fahrenheit?",
    "Which animal is known as the king of the jungle?",
    "What is the square root of 81?",
    "Who was the first person to walk on the Moon?",
    "What is the longest river in Africa?",
    "What color do you get by mixing blue and yellow?",
    "How many hours are there in a day?",
    "What is H2O commonly called?",
    "Which instrument has black and white keys?",
    "What is the capital of Spain?",
    "Who wrote the novel 1984?",
    "What is the fastest land animal?",
    "How many players are on a football (soccer) team on the field?",
    "What is the smallest prime number?",
    "Which gas do humans need to breathe to live?",
    "What is the capital of Canada?",
    "In which ocean is Hawaii?",
    "What shape has three sides?",
    "Which metal is liquid at room temperature?",
    "What is 12 multiplied by 12?",
    "Which season comes after winter?",
    "What is the closest star to Earth?",
    "How many legs does an insect have?",
    "What is the capital of Australia?",
    "Who painted The Starry Night?",
    "What is the hardest natural substance?",
    "What do plants need sunlight for?",
    "How many minutes are in an hour?",
    "What is the largest desert in the world?",
    "Which planet is closest to the Sun?",
    "What language is spoken in Mexico?",
    "Who invented the telephone?",
    "What is the capital of Egypt?",
    "How many strings does a standard guitar have?",
    "What is the main ingredient of guacamole?",
    "What is the largest mammal?",
    "Which country is home to the kangaroo?",
    "What does DNA stand for?",
    "What is the chemical symbol for iron?",
    "How many weeks are in a year?",
    "Who composed the Fifth Symphony that begins with four famous notes?",
    "What is the capital of Russia?",
    "What is frozen water called?",
    "Which bird is a symbol of peace?",
    "What is the opposite of north?",
    "How many bones are in the adult human body?",
    "What is the largest country by area?",
    "What force keeps us on the ground?",
    "Which vitamin does sunlight help the body make?",
    "What is the capital of China?",
    "What is the boiling point of water in Fahrenheit?",
    "Which continent is Kenya in?",
    "What is the name of our galaxy?",
    "How many sides does a triangle have?",
    "What is the capital of Japan?",
    "Who wrote Pride and Prejudice?",
    "What is the chemical symbol for sodium?",
    "How many days are in a week?",
    "What is the largest organ of the human body?",
    "Which planet has the most famous rings?",
    "What is the capital of Germany?",
    "What gas do plants take in from the air?",
    "Who discovered penicillin?",
    "What is the main language spoken in Argentina?",
    "How many centimetres are in a metre?",
    "What is the tallest animal in the world?",
    "Which ocean lies between Europe and North America?",
    "What is the capital of India?",
    "What is 15 plus 27?",
    "Who was the first President of the United States?",
    "What is the largest bone in the human body?",
    "How many months have 31 days?",
    "Which country gave the Statue of Liberty to the United States?",
    "What is the primary ingredient in bread?",
    "What is the capital of Greece?",
    "Which element has the chemical symbol O?",
    "What is the study of living things called?",
    "How many teeth does an adult human usually have?",
    "Which sport is played at Wimbledon?",
    "What is the capital of Kenya?",
    "What colour is chlorophyll?",
    "Who wrote the play Doctor Faustus?",
    "How many planets are in the solar system?",
    "What is the largest city in the United States by population?",
    "What do caterpillars turn into?",
    "What is the chemical formula for table salt?",
    "Which country is famous for the maple leaf on its flag?",
    "What is the capital of Portugal?",
    "How many degrees are in a right angle?",
    "Who invented the light bulb that became widely used?",
    "What is the main gas in the air we breathe?",
    "Which animal is the largest living bird?",
    "What is the capital of Norway?",
    "What is half of 100?",
    "Which language has the most native speakers?",
    "What does a compass show?",
    "What is the capital of Turkey?",
    "Which organ do humans use to breathe?",
    "What is the largest lake in Africa?",
    "Who is the author of the Harry Potter books?",
    "What instrument measures air pressure?",
    "What is the capital of Argentina?",
    "How many zeros are in one million?",
    "Which metal is used in electrical wires because it conducts well?",
    "What is the currency of the United Kingdom?",
    "What natural satellite orbits the Earth?",
    "What is the capital of Sweden?",
    "Which blood cells fight infection?",
    "What is the smallest planet in the solar system?",
    "What language is spoken in Quebec besides English?",
    "How many sides does an octagon have?",
    "What is the capital of Thailand?",
    "Which famous scientist proposed the laws of motion?",
    "What is the largest island in the world?",
    "What is the capital of Mexico?",
    "What do we call animals that eat only plants?",
    "Which river flows through London?",
)


def questions(n: int) -> list[str]:
    """The first ``n`` replay questions (all of them at most)."""
    if n < 0:
        raise ValueError(f"replay={n}: use 0 (no replay) or a positive number of examples.")
    return list(REPLAY_QUESTIONS[:n])


def whole_sentences(answer: str) -> str:
    """``answer`` up to its last full stop, question or exclamation mark ("" if it has none): an
    answer cut by the token limit would teach the model to stop mid-sentence."""
    text = answer.strip()
    end = max(text.rfind(c) for c in ".!?")
    return text[:end + 1] if end >= 0 else ""


def conversations(pairs: Sequence[tuple[str, str]], system_prompt: str | None = None) -> list[list[dict]]:
    """Chat conversations for (question, base answer) pairs, each answer cut to whole sentences;
    answers with none are skipped."""
    out = []
    for q, a in pairs:
        a = whole_sentences(a)
        if not a:
            continue
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        out.append(msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return out
