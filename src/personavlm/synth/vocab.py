"""Word banks the simulated people are drawn from: names, places, jobs, pets, languages.

Data only. Every bank is a tuple, so a seeded `random.Random` picks the same entry on every
run (sets would iterate in hash order).
"""

from __future__ import annotations

__all__ = [
    "CITIES",
    "FIRST_NAMES",
    "LANGUAGES",
    "LAST_NAMES",
    "MONTHS",
    "OCCUPATIONS",
    "PET_NAMES",
    "PET_SPECIES",
]

FIRST_NAMES = (
    "Maya", "Tom", "Priya", "Sam", "Lena", "Omar", "Jonas", "Aiko", "Ravi", "Chloe", "Mateo",
    "Nadia", "Felix", "Hana", "Kwame", "Isla", "Diego", "Freya", "Arjun", "Zoe", "Leon",
    "Mira", "Theo", "Amara", "Lucas", "Ines", "Noah", "Sofia", "Elif", "Marcus", "Yara",
    "Oscar", "Nina", "Ezra", "Lucia", "Kai", "Rosa", "Hugo", "Alba", "Tariq",
)  # fmt: skip
LAST_NAMES = (
    "Okafor", "Lindqvist", "Moreau", "Tanaka", "Brennan", "Costa", "Novak", "Haddad",
    "Fischer", "Singh", "Walsh", "Kowalski", "Romero", "Adeyemi", "Larsen", "Ito",
)  # fmt: skip
CITIES = (
    "Leeds", "Bristol", "Lyon", "Porto", "Utrecht", "Glasgow", "Valencia", "Gothenburg",
    "Dublin", "Bologna", "Cardiff", "Ghent", "Krakow", "Seville", "Aarhus", "Brighton",
)  # fmt: skip
# occupation -> the domain the person is an expert in (growth.py explains at that level)
OCCUPATIONS = {
    "nurse": "medicine",
    "software developer": "programming",
    "accountant": "finance",
    "chef": "cooking",
    "photographer": "photography",
    "music teacher": "music",
    "landscape gardener": "gardening",
    "car mechanic": "cars",
}
PET_SPECIES = ("cat", "dog", "rabbit")
PET_NAMES = (
    "Miso", "Biscuit", "Pepper", "Nori", "Waffles", "Juniper", "Pickle", "Mochi", "Ziggy",
    "Olive", "Bramble", "Tofu",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
LANGUAGES = (
    "Portuguese", "Polish", "Tamil", "Dutch", "Turkish", "Swahili", "Japanese", "Greek",
    "Arabic", "Swedish",
)  # fmt: skip
