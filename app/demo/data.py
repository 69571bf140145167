"""The demo coalition's fixed facts: a fictional Hudson Valley (New York) coalition and its catalog.

Every organisation name is invented; towns and coordinates are real so distances on a map make sense.
The catalog mirrors the SKUs and substitutes of /work/shared/examples/problem-small.json.
"""

from __future__ import annotations

from dataclasses import dataclass

REGION = "Hudson Valley"


@dataclass(frozen=True)
class Place:
    """An organisation with one site of its own (name, town, coordinates, equity weight)."""

    name: str
    town: str
    lat: float
    lon: float
    equity_weight: float = 1.0


@dataclass(frozen=True)
class CatalogItem:
    sku: str
    name: str
    category: str
    unit: str
    pack_size: int
    shelf_life_days: int | None


COALITION_NAME = "Hudson Valley Crisis Supply Coalition"

# (operator name, its depots). Only stock at these depots is allocatable supply.
DEPOT_OPERATORS: list[tuple[str, list[Place]]] = [
    (
        "Mid-Hudson Logistics Cooperative",
        [
            Place("Stewart Field Regional Depot", "New Windsor", 41.5041, -74.0988),
            Place("Kingston Rondout Depot", "Kingston", 41.9179, -73.9850),
            Place("Fishkill Interchange Depot", "Fishkill", 41.5290, -73.8790),
        ],
    ),
    (
        "Westchester Emergency Warehouse Authority",
        [Place("Elmsford Distribution Depot", "Elmsford", 41.0551, -73.8201)],
    ),
]

# Equity weights > 1 for communities with a high social vulnerability index, < 1 for well-resourced ones.
HOSPITALS: list[Place] = [
    Place("Poughkeepsie Riverside Hospital", "Poughkeepsie", 41.6960, -73.9290),
    Place("Newburgh Harbor Hospital", "Newburgh", 41.5020, -74.0160, 2.2),
    Place("Kingston Valley Medical Center", "Kingston", 41.9310, -74.0050, 1.3),
    Place("Middletown Shawangunk Hospital", "Middletown", 41.4480, -74.4170, 1.5),
    Place("Beacon Mount Hospital", "Beacon", 41.5060, -73.9640),
    Place("Peekskill Bay Medical Center", "Peekskill", 41.2880, -73.9170, 1.4),
    Place("White Plains Crossroads Hospital", "White Plains", 41.0330, -73.7700, 0.8),
    Place("Yonkers Palisade Hospital", "Yonkers", 40.9340, -73.8960, 1.8),
    Place("New Rochelle Sound Medical Center", "New Rochelle", 40.9130, -73.7860),
    Place("Ossining Croton Hospital", "Ossining", 41.1640, -73.8590),
    Place("Nyack Tappan Hospital", "Nyack", 41.0920, -73.9200, 0.9),
    Place("Haverstraw Bay General Hospital", "Haverstraw", 41.1960, -73.9680),
    Place("Goshen Orange Valley Hospital", "Goshen", 41.4030, -74.3260),
    Place("Port Jervis Delaware Hospital", "Port Jervis", 41.3760, -74.6880, 2.5),
    Place("Warwick Greenwood Hospital", "Warwick", 41.2570, -74.3570),
    Place("Catskill Greene Memorial Hospital", "Catskill", 42.2160, -73.8660, 1.6),
    Place("Hudson Columbia Memorial Hospital", "Hudson", 42.2510, -73.7890, 1.7),
    Place("Rhinebeck Northern Dutchess Hospital", "Rhinebeck", 41.9290, -73.9100, 0.8),
    Place("Carmel Putnam Lakes Hospital", "Carmel", 41.4290, -73.6830),
    Place("Harris Sullivan Valley Hospital", "Harris", 41.7170, -74.7490, 2.0),
    Place("Ellenville Rondout Regional Hospital", "Ellenville", 41.7180, -74.3930, 1.9),
    Place("Suffern Ramapo Medical Center", "Suffern", 41.1160, -74.1490),
    Place("Mount Kisco Northern Westchester Hospital", "Mount Kisco", 41.2050, -73.7300, 0.8),
]

CLINICS: list[Place] = [
    Place("New Paltz Ridgeview Clinic", "New Paltz", 41.7480, -74.0850),
    Place("Saugerties Esopus Creek Clinic", "Saugerties", 42.0770, -73.9530),
    Place("Hyde Park Family Health Center", "Hyde Park", 41.7840, -73.9330),
    Place("Wappingers Falls Community Clinic", "Wappingers Falls", 41.5970, -73.9120, 1.3),
    Place("Brewster Lakeside Health Center", "Brewster", 41.3970, -73.6170),
    Place("Monticello Sullivan Health Clinic", "Monticello", 41.6550, -74.6890, 2.3),
    Place("Walden Wallkill Family Clinic", "Walden", 41.5610, -74.1880),
    Place("Spring Valley Neighborhood Health Center", "Spring Valley", 41.1130, -74.0440, 2.1),
    Place("Tarrytown Sleepy Hollow Clinic", "Tarrytown", 41.0760, -73.8590),
    Place("Liberty Catskill Mountain Clinic", "Liberty", 41.8010, -74.7460, 1.8),
    Place("Pine Bush Valley Clinic", "Pine Bush", 41.6080, -74.2990),
]

FOOD_HUBS: list[Place] = [
    Place("Poughkeepsie Community Food Hub", "Poughkeepsie", 41.7050, -73.9200, 1.4),
    Place("Newburgh Open Pantry Network", "Newburgh", 41.4990, -74.0080, 2.2),
    Place("Kingston Harvest Food Bank", "Kingston", 41.9250, -73.9960),
    Place("Middletown Neighbors Food Hub", "Middletown", 41.4440, -74.4230, 1.5),
    Place("Yonkers Riverfront Food Pantry", "Yonkers", 40.9320, -73.8990, 1.9),
    Place("Peekskill Hillside Food Hub", "Peekskill", 41.2910, -73.9210),
    Place("Catskill Mountain Food Share", "Catskill", 42.2180, -73.8640, 1.6),
    Place("Monticello Sullivan Food Hub", "Monticello", 41.6560, -74.6900, 2.4),
    Place("Beacon Main Street Pantry", "Beacon", 41.5050, -73.9690),
    Place("Spring Valley Family Food Hub", "Spring Valley", 41.1140, -74.0420, 2.0),
    Place("Port Jervis Tri-State Food Pantry", "Port Jervis", 41.3750, -74.6930, 2.1),
    Place("Hudson Columbia Food Hub", "Hudson", 42.2530, -73.7910),
]

DONORS: list[Place] = [
    Place("Shawangunk Distilling Company", "Gardiner", 41.6800, -74.1510),
    Place("Tappan Zee Savings Bank Foundation", "Tarrytown", 41.0700, -73.8650),
    Place("Catskill Industrial Supply", "Saugerties", 42.0900, -73.9700),
    Place("Ridgeline Pharmaceuticals", "Pearl River", 41.0590, -74.0220),
    Place("Valley Grocers Cooperative", "Montgomery", 41.5280, -74.2370),
    Place("Hudson River Textile Works", "Red Hook", 42.0090, -73.8750),
]

CATALOG: list[CatalogItem] = [
    CatalogItem("N95", "N95 respirator (NIOSH-approved)", "ppe", "each", 20, 1825),
    CatalogItem("KN95", "KN95 respirator", "ppe", "each", 20, 1825),
    CatalogItem("ELASTOMERIC", "Elastomeric half-mask respirator with P100 filters", "ppe", "each", 1, 3650),
    CatalogItem("SURGICAL_MASK", "Surgical mask, ASTM level 2", "ppe", "each", 50, 1825),
    CatalogItem("CLOTH_MASK", "Reusable three-layer cloth mask", "ppe", "each", 10, None),
    CatalogItem("GLOVES_NITRILE", "Nitrile exam gloves, box of 100", "ppe", "box", 10, 1825),
    CatalogItem("GOWN_ISOLATION", "Isolation gown, AAMI level 2", "ppe", "each", 50, 1825),
    CatalogItem("FACE_SHIELD", "Full-length face shield", "ppe", "each", 24, None),
    CatalogItem("HAND_SANITIZER", "Hand sanitizer, 70% alcohol, 500 ml", "sanitation", "bottle", 12, 1095),
    CatalogItem("DISINFECTANT_WIPES", "Disinfectant wipes, canister of 80", "sanitation", "canister", 12, 730),
    CatalogItem("FOOD_BOX", "Emergency food box (family of four, three days)", "food", "box", 1, 365),
    CatalogItem("WATER_CASE", "Drinking water, case of 24 x 500 ml", "food", "case", 1, 730),
]

# (demanded SKU, SKU that may fill it, per-unit penalty) — direct only, never transitive.
SUBSTITUTES: list[tuple[str, str, float]] = [
    ("N95", "KN95", 0.3),
    ("N95", "ELASTOMERIC", 0.1),
    ("KN95", "N95", 0.05),
    ("SURGICAL_MASK", "KN95", 0.2),
    ("CLOTH_MASK", "SURGICAL_MASK", 0.05),
]

# What each kind of requester asks for: SKU -> (smallest, largest) line quantity in the item's unit.
HOSPITAL_NEEDS: dict[str, tuple[int, int]] = {
    "N95": (400, 4000),
    "KN95": (200, 2000),
    "ELASTOMERIC": (20, 200),
    "SURGICAL_MASK": (1000, 8000),
    "GLOVES_NITRILE": (50, 600),
    "GOWN_ISOLATION": (200, 2500),
    "FACE_SHIELD": (100, 1000),
    "HAND_SANITIZER": (50, 600),
    "DISINFECTANT_WIPES": (40, 400),
}
FOOD_HUB_NEEDS: dict[str, tuple[int, int]] = {
    "FOOD_BOX": (100, 900),
    "WATER_CASE": (100, 1200),
    "CLOTH_MASK": (300, 3000),
    "HAND_SANITIZER": (40, 300),
    "GLOVES_NITRILE": (10, 80),
}

JUSTIFICATIONS: list[str] = [
    "Census up 40% this week; current stock lasts under three days.",
    "Respiratory surge unit opening on the third floor.",
    "Supplier back-order until next month; bridging the gap.",
    "Outbreak in two affiliated nursing homes we supply.",
    "Routine replenishment at the current burn rate.",
    "Distribution days doubled after the storm; lines around the block.",
    None,
]

# Demo keys the service prints at start-up: role label -> (key role, whom it is bound to).
# The requester is a hospital, requester-2 a food hub, so cross-organisation isolation is easy to try.
DEMO_KEY_ROLES: dict[str, tuple[str, str | None]] = {
    "admin": ("admin", None),
    "logistics": ("logistics", None),
    "requester": ("requester", HOSPITALS[0].name),
    "requester-2": ("requester", FOOD_HUBS[0].name),
    "donor": ("donor", DONORS[0].name),
    "driver": ("driver", COALITION_NAME),
}
