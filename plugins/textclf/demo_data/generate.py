"""Generate ``reviews.csv``, the bundled demo data: short Korean and English movie reviews.

The reviews are composed from hand-written phrases with a fixed seed, so the file is reproducible:
``python plugins/textclf/demo_data/generate.py`` rewrites it byte for byte. The columns follow the
default configuration: ``review_id``, ``movie_id``, ``text``, ``rating`` (1-10) and ``review_date``.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

SEED = 20141201
FIRST_DAY = dt.date(2026, 11, 17)
DAYS = 14
ROWS_PER_DAY = 300

POSITIVE_KO = [
    "정말 재밌어요", "최고의 영화", "배우들 연기가 훌륭해요", "또 보고 싶다", "감동적이었어요",
    "시간 가는 줄 몰랐다", "강력 추천합니다", "음악이 너무 좋아요", "연출이 뛰어나다", "완전 꿀잼",
    "눈물 났어요", "가족과 보기 좋아요", "인생 영화 등극", "스토리가 탄탄해요", "배우 케미 최고",
]
NEGATIVE_KO = [
    "너무 지루해요", "시간 아깝다", "최악의 영화", "스토리가 엉망", "돈이 아까워요",
    "다시는 안 봄", "연기가 어색해요", "졸면서 봤다", "결말이 허무해요", "기대 이하",
    "억지 감동", "중간에 나왔어요", "노잼", "개연성이 없다", "광고에 속았다",
]
NEUTRAL_KO = ["그냥 그래요", "볼만했어요", "평범한 영화", "나쁘지 않아요", "한 번은 볼만"]
POSITIVE_EN = [
    "loved it", "a masterpiece", "great acting", "would watch again", "beautiful soundtrack",
    "brilliant story", "highly recommended", "so much fun", "moving and funny", "best film this year",
]
NEGATIVE_EN = [
    "so boring", "waste of time", "worst movie ever", "terrible plot", "awful acting",
    "fell asleep", "not worth the ticket", "painfully slow", "what a mess", "total disappointment",
]
NEUTRAL_EN = ["it was okay", "average at best", "nothing special", "fine for a rainy day"]
FILLERS = ["", "", "", "ㅋㅋㅋ", "ㅠㅠ", "!!", "...", " 👍", " 😡", " 🎬", " ^^", " 10점 만점에"]


def _review(rng: random.Random) -> tuple[str, int]:
    mood = rng.choices(["positive", "negative", "neutral"], weights=[0.6, 0.3, 0.1])[0]
    english = rng.random() < 0.3
    if mood == "positive":
        phrases, rating = (POSITIVE_EN if english else POSITIVE_KO), rng.choice([9, 10, 10])
    elif mood == "negative":
        phrases, rating = (NEGATIVE_EN if english else NEGATIVE_KO), rng.choice([1, 1, 2, 3, 4])
    else:
        phrases, rating = (NEUTRAL_EN if english else NEUTRAL_KO), rng.randint(5, 8)
    text = " ".join(rng.sample(phrases, k=rng.randint(1, 2))) + rng.choice(FILLERS)
    # A few reviews mix languages or contradict their rating, as real ones do.
    if rng.random() < 0.05:
        text += " " + rng.choice(POSITIVE_EN + NEGATIVE_EN + POSITIVE_KO + NEGATIVE_KO)
    return text, rating


def generate(path: Path) -> int:
    rng = random.Random(SEED)
    rows = []
    review_id = 1
    for day_index in range(DAYS):
        day = FIRST_DAY + dt.timedelta(days=day_index)
        for _ in range(ROWS_PER_DAY):
            text, rating = _review(rng)
            if rng.random() < 0.01:
                text = ""
            rows.append([review_id, rng.randint(1000, 1050), text, rating, day.isoformat()])
            review_id += 1
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["review_id", "movie_id", "text", "rating", "review_date"])
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent / "reviews.csv"
    print(f"wrote {generate(target)} rows to {target}")
