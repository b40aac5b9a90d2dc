"""Our held-out question set for the LLM (a small C-Eval of our own): short factual and
conversational questions with the answers a correct reply contains.

Written here for this purpose and never trained on: no training corpus, distillation prompt set or
calibration set may contain a question of it (tests/unit/test_qa.py asserts it against each). A
reply scores when it contains one of the item's accepted answers as whole words, case-insensitive
(numbers as digits or words). Crude next to human grading, but the same rule scores the teacher and
each compressed form, so their difference is what it measures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class QA:
    question: str
    answers: tuple[str, ...]  # any one, as whole words


def _qa(question: str, *answers: str) -> QA:
    return QA(question, answers)


QUESTIONS: tuple[QA, ...] = (
    # geography
    _qa("What is the capital of France?", "paris"),
    _qa("What is the capital of Japan?", "tokyo"),
    _qa("What is the capital of Italy?", "rome"),
    _qa("What is the capital of Germany?", "berlin"),
    _qa("What is the capital of Spain?", "madrid"),
    _qa("What is the capital of the United Kingdom?", "london"),
    _qa("What is the capital of Canada?", "ottawa"),
    _qa("What is the capital of Russia?", "moscow"),
    _qa("What is the capital of China?", "beijing"),
    _qa("What is the capital of Egypt?", "cairo"),
    _qa("What is the largest ocean on Earth?", "pacific"),
    _qa("What is the longest river in Africa?", "nile"),
    _qa("On which continent is Brazil?", "south america"),
    _qa("On which continent is Kenya?", "africa"),
    _qa("What is the highest mountain in the world?", "everest"),
    _qa("Which country has the city of Sydney?", "australia"),
    _qa("Which desert is the largest hot desert in the world?", "sahara"),
    _qa("In which country are the pyramids of Giza?", "egypt"),
    _qa("Which country is shaped like a boot?", "italy"),
    _qa("What is the largest country in the world by area?", "russia"),
    # science
    _qa("What planet do we live on?", "earth"),
    _qa("What is the closest star to the Earth?", "sun"),
    _qa("Which planet is known as the Red Planet?", "mars"),
    _qa("What is the largest planet in our solar system?", "jupiter"),
    _qa("What gas do plants take in from the air?", "carbon dioxide", "co2"),
    _qa("What gas do humans need to breathe to live?", "oxygen"),
    _qa("What is the chemical symbol for water?", "h2o"),
    _qa("What is the chemical symbol for gold?", "au"),
    _qa("At what temperature in Celsius does water freeze?", "0", "zero"),
    _qa("At what temperature in Celsius does water boil?", "100", "one hundred"),
    _qa("How many legs does a spider have?", "8", "eight"),
    _qa("How many legs does an insect have?", "6", "six"),
    _qa("What is the hardest natural substance?", "diamond", "diamonds"),
    _qa("What force pulls objects toward the Earth?", "gravity", "gravitational"),
    _qa("What organ pumps blood around the body?", "heart"),
    _qa("What organ do we use to think?", "brain"),
    _qa("How many bones are in the adult human body?", "206"),
    _qa("What is the natural satellite of the Earth called?", "moon"),
    _qa("What do bees make?", "honey"),
    _qa("What is the fastest land animal?", "cheetah", "cheetahs"),
    _qa("What is the largest mammal in the world?", "blue whale", "whale"),
    _qa("What do caterpillars turn into?", "butterfly", "butterflies", "moth", "moths"),
    _qa("What is the speed of light, roughly, in kilometres per second?", "300,000", "300000", "299,792"),
    _qa("What part of the plant makes food from sunlight?", "leaf", "leaves"),
    _qa("What is frozen water called?", "ice"),
    # numbers
    _qa("What is two plus two?", "4", "four"),
    _qa("What is ten times ten?", "100", "one hundred"),
    _qa("How many days are in a week?", "7", "seven"),
    _qa("How many months are in a year?", "12", "twelve"),
    _qa("How many hours are in a day?", "24", "twenty-four", "twenty four"),
    _qa("How many minutes are in an hour?", "60", "sixty"),
    _qa("How many seconds are in a minute?", "60", "sixty"),
    _qa("How many sides does a triangle have?", "3", "three"),
    _qa("How many sides does a square have?", "4", "four"),
    _qa("How many continents are there?", "7", "seven"),
    _qa("What is half of one hundred?", "50", "fifty"),
    _qa("How many days are in a leap year?", "366"),
    _qa("How many players are on a soccer team on the field?", "11", "eleven"),
    _qa("How many strings does a standard guitar have?", "6", "six"),
    _qa("How many colours are in a rainbow?", "7", "seven"),
    # history and culture
    _qa("Who wrote Romeo and Juliet?", "shakespeare"),
    _qa("Who painted the Mona Lisa?", "leonardo", "da vinci"),
    _qa("Who was the first person to walk on the Moon?", "armstrong"),
    _qa("Who developed the theory of relativity?", "einstein"),
    _qa("Who was the first president of the United States?", "washington"),
    _qa("Which ship sank in 1912 after hitting an iceberg?", "titanic"),
    _qa("Who wrote the Harry Potter books?", "rowling"),
    _qa("Who discovered penicillin?", "fleming"),
    _qa("Who invented the telephone?", "bell"),
    _qa("Who composed the Fifth Symphony that begins da-da-da-dum?", "beethoven"),
    _qa("In which country did the Olympic Games begin?", "greece"),
    _qa("What language is spoken in Brazil?", "portuguese"),
    _qa("What language is spoken in Mexico?", "spanish"),
    _qa("What is the currency of Japan?", "yen"),
    _qa("What is the currency of the United States?", "dollar", "dollars"),
    # everyday knowledge
    _qa("What colour is the sky on a clear day?", "blue"),
    _qa("What colour are bananas when they are ripe?", "yellow"),
    _qa("What colour do you get when you mix blue and yellow?", "green"),
    _qa("What colour do you get when you mix red and white?", "pink"),
    _qa("What do cows drink?", "water"),
    _qa("What animal says moo?", "cow", "cows"),
    _qa("What animal is known as the king of the jungle?", "lion", "lions"),
    _qa("Which season comes after winter?", "spring"),
    _qa("Which season comes after summer?", "autumn", "fall"),
    _qa("What do we call a baby dog?", "puppy", "puppies"),
    _qa("What do we call a baby cat?", "kitten", "kittens"),
    _qa("What do you use to write on a blackboard?", "chalk"),
    _qa("What is the opposite of hot?", "cold"),
    _qa("What is the opposite of up?", "down"),
    _qa("What meal do people eat in the morning?", "breakfast"),
    _qa("What fruit is used to make wine?", "grape", "grapes"),
    _qa("What do you call the person who flies a plane?", "pilot"),
    _qa("Where do fish live?", "water", "sea", "ocean", "oceans", "rivers", "lakes"),
    _qa("What do you wear on your feet?", "shoes", "socks", "shoe"),
    _qa("What device do you use to take photographs?", "camera"),
    # computing (our users' field)
    _qa("What does CPU stand for?", "central processing unit"),
    _qa("What does GPU stand for?", "graphics processing unit"),
    _qa("What does RAM stand for?", "random access memory", "random-access memory"),
    _qa("What does AI stand for?", "artificial intelligence"),
    _qa("What does the abbreviation www stand for?", "world wide web"),
    _qa("How many bits are in a byte?", "8", "eight"),
    _qa("Which company makes the iPhone?", "apple"),
    _qa("Which company makes the Windows operating system?", "microsoft"),
    _qa("What programming language is named after a snake?", "python"),
    _qa("What is the binary number system based on?", "2", "two", "0 and 1", "zeros and ones"),
    # conversation
    _qa("Please greet me.", "hello", "hi", "greetings", "welcome", "hey"),
    _qa("Say thank you in French.", "merci"),
    _qa("How do you say hello in Spanish?", "hola"),
    _qa("What is the plural of mouse?", "mice"),
    _qa("What is the past tense of go?", "went"),
)


def answer_pattern(answer: str) -> re.Pattern:
    return re.compile(rf"(?<![\w]){re.escape(answer)}(?![\w])", re.IGNORECASE)


def correct(reply: str, item: QA) -> bool:
    return any(answer_pattern(a).search(reply) for a in item.answers)


def score(reply_to: Callable[[str], str], items: tuple[QA, ...] = QUESTIONS) -> tuple[float, list[bool]]:
    """Percent of items whose reply (`reply_to(question)`) contains an accepted answer, and each verdict."""
    verdicts = [correct(reply_to(item.question), item) for item in items]
    return 100.0 * sum(verdicts) / len(verdicts), verdicts
