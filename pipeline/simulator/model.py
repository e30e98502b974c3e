"""The simulated providers' world: a day of matches that unfold over simulated time.

Everything here is pure and deterministic. A :class:`World` built from a seed and a
clock start draws, once, a plan for every match from ``random.Random`` seeded by
(seed, sport, match id): teams, start time, goals and cards with their minutes,
breaks, overtime. What a request sees is a function of that plan and the simulated
time it is asked at; nothing changes between requests, so two worlds with the same
seed and start give the same answer to the same request at the same time.

Answers follow the real APIs (``PROVIDERS.md`` and the recorded responses under
``samples/``): the same envelopes, field names and key order, status codes and
labels. Deliberate divergences:

- ``fixture.status.extra`` is present (the current API sends it; the 2024 samples
  predate it);
- football player statistics are coarse (minutes, rating, goals, cards); the other
  fields of the real shape are there and null;
- basketball and hockey ``timer`` is the minute of the period in play;
- a cancelled (VAR) goal disappears from the events and the score when the
  ``Var`` / ``Goal cancelled`` event appears, as the real feed does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

MEDIA = "https://media.api-sports.io"
SPORTS = ("football", "basketball", "hockey")
DEFAULT_SIZES: dict[str, int] = {"football": 30, "basketball": 15, "hockey": 15}
PROVIDER_OF: dict[str, str] = {
    "football": "apifootball", "basketball": "apibasketball", "hockey": "apihockey",
}


# -- clocks -----------------------------------------------------------------------------------


class Clock(Protocol):
    """Simulated time: epoch seconds, possibly running faster than the wall clock."""

    start: float
    speed: float

    def now(self) -> float: ...


class SimClock:
    """``start + (monotonic real time elapsed) * speed``; ``start`` defaults to now."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be above 0, not {speed!r}")
        self.speed = float(speed)
        self.start = time.time() if start is None else float(start)
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed

    def real_seconds(self, sim_seconds: float) -> float:
        """How long ``sim_seconds`` of simulated time last on the wall clock."""
        return sim_seconds / self.speed


class ManualClock:
    """A clock that moves only when told to (tests, ``POST /_sim/clock``)."""

    speed = 1.0

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else float(start)
        self._now = self.start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock does not go back")
        self._now += seconds
        return self._now

    def set(self, ts: float) -> float:
        if ts < self._now:
            raise ValueError("the clock does not go back")
        self._now = float(ts)
        return self._now


def dumps_wire(obj: Any) -> str:
    """Compact JSON with ``\\/`` and ``\\uXXXX`` escapes, as the providers send it."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


# -- leagues and teams ------------------------------------------------------------------------


@dataclass(frozen=True)
class League:
    id: int
    name: str
    country: str
    code: str | None  # country / flag code; None for "World" and "Europe"
    cup: bool = False  # knockout: a draw goes to extra time (football)
    calendar: bool = False  # the season is the calendar year, not summer to summer


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    venue_id: int | None = None
    venue: str | None = None
    city: str | None = None


def _teams(rows: str) -> tuple[Team, ...]:
    out = []
    for line in rows.strip().splitlines():
        f = line.strip().split("|")
        if len(f) == 2:
            out.append(Team(int(f[0]), f[1]))
        else:
            out.append(Team(int(f[0]), f[1], int(f[2]), f[3], f[4]))
    return tuple(out)


FOOTBALL: list[tuple[League, tuple[Team, ...]]] = [
    (League(39, "Premier League", "England", "gb-eng"), _teams("""
        33|Manchester United|556|Old Trafford|Manchester
        34|Newcastle|562|St. James' Park|Newcastle upon Tyne
        40|Liverpool|550|Anfield|Liverpool
        42|Arsenal|494|Emirates Stadium|London
        47|Tottenham|593|Tottenham Hotspur Stadium|London
        49|Chelsea|519|Stamford Bridge|London
        50|Manchester City|555|Etihad Stadium|Manchester
        51|Brighton|508|American Express Stadium|Falmer, East Sussex
        66|Aston Villa|495|Villa Park|Birmingham
        48|West Ham|598|London Stadium|London
        45|Everton|22033|Goodison Park|Liverpool
        65|Nottingham Forest|566|The City Ground|Nottingham""")),
    (League(140, "La Liga", "Spain", "es"), _teams("""
        529|Barcelona|19939|Estadi Olímpic Lluís Companys|Barcelona
        541|Real Madrid|1456|Estadio Santiago Bernabéu|Madrid
        530|Atletico Madrid|19217|Estadio Cívitas Metropolitano|Madrid
        536|Sevilla|1494|Estadio Ramón Sánchez Pizjuán|Sevilla
        548|Real Sociedad|1491|Reale Arena|Donostia-San Sebastián
        533|Villarreal|1460|Estadio de la Cerámica|Villarreal
        543|Real Betis|1489|Estadio Benito Villamarín|Sevilla
        531|Athletic Club|1470|San Mamés Barria|Bilbao
        532|Valencia|1497|Estadio de Mestalla|Valencia
        538|Celta Vigo|1467|Abanca-Balaídos|Vigo
        547|Girona|1468|Estadi Municipal de Montilivi|Girona
        727|Osasuna|1479|Estadio El Sadar|Pamplona""")),
    (League(135, "Serie A", "Italy", "it"), _teams("""
        505|Inter|907|Stadio Giuseppe Meazza|Milano
        489|AC Milan|907|Stadio Giuseppe Meazza|Milano
        496|Juventus|909|Allianz Stadium|Torino
        492|Napoli|943|Stadio Diego Armando Maradona|Napoli
        497|AS Roma|910|Stadio Olimpico|Roma
        487|Lazio|910|Stadio Olimpico|Roma
        499|Atalanta|880|Gewiss Stadium|Bergamo
        502|Fiorentina|902|Stadio Artemio Franchi|Firenze
        500|Bologna|881|Stadio Renato Dall'Ara|Bologna
        503|Torino|12277|Stadio Olimpico Grande Torino|Torino
        494|Udinese|884|Bluenergy Stadium|Udine
        895|Como|12269|Stadio Giuseppe Sinigaglia|Como""")),
    (League(78, "Bundesliga", "Germany", "de"), _teams("""
        157|Bayern Munich|700|Allianz Arena|München
        165|Borussia Dortmund|702|Signal Iduna Park|Dortmund
        173|RB Leipzig|738|Red Bull Arena|Leipzig
        168|Bayer Leverkusen|697|BayArena|Leverkusen
        169|Eintracht Frankfurt|747|Deutsche Bank Park|Frankfurt am Main
        172|VfB Stuttgart|722|MHPArena|Stuttgart
        163|Borussia Mönchengladbach|716|Borussia-Park|Mönchengladbach
        160|SC Freiburg|12717|Europa-Park Stadion|Freiburg im Breisgau
        167|1899 Hoffenheim|731|PreZero Arena|Sinsheim
        182|Union Berlin|744|Stadion An der Alten Försterei|Berlin
        162|Werder Bremen|741|Weserstadion|Bremen
        161|VfL Wolfsburg|751|Volkswagen Arena|Wolfsburg""")),
    (League(61, "Ligue 1", "France", "fr"), _teams("""
        85|Paris Saint Germain|671|Parc des Princes|Paris
        81|Marseille|12678|Orange Vélodrome|Marseille
        80|Lyon|666|Groupama Stadium|Décines-Charpieu
        91|Monaco|659|Stade Louis-II|Monaco
        79|Lille|19207|Stade Pierre-Mauroy|Villeneuve d'Ascq
        84|Nice|1500|Allianz Riviera|Nice
        94|Rennes|680|Roazhon Park|Rennes
        116|Lens|651|Stade Bollaert-Delelis|Lens
        106|Stade Brestois 29|649|Stade Francis-Le Blé|Brest
        96|Toulouse|686|Stadium de Toulouse|Toulouse""")),
    (League(2, "UEFA Champions League", "World", None, cup=True), _teams("""
        211|Benfica|1265|Estádio do Sport Lisboa e Benfica|Lisboa
        212|FC Porto|1271|Estádio do Dragão|Porto
        228|Sporting CP|1275|Estádio José Alvalade|Lisboa
        197|PSV Eindhoven|1110|Philips Stadion|Eindhoven
        194|Ajax|1117|Johan Cruijff ArenA|Amsterdam
        247|Celtic|1139|Celtic Park|Glasgow
        569|Club Brugge KV|173|Jan Breydelstadion|Brugge
        571|Red Bull Salzburg|1168|Red Bull Arena|Wals-Siezenheim
        565|BSC Young Boys|1098|Stadion Wankdorf|Bern
        209|Feyenoord|1114|Stadion Feijenoord|Rotterdam
        645|Galatasaray|1943|RAMS Park|İstanbul
        550|Shakhtar Donetsk|10491|Arena Lviv|Lviv""")),
]

BASKETBALL: list[tuple[League, tuple[Team, ...]]] = [
    (League(12, "NBA", "USA", "us"), _teams("""
        132|Atlanta Hawks
        133|Boston Celtics
        134|Brooklyn Nets
        135|Charlotte Hornets
        136|Chicago Bulls
        137|Cleveland Cavaliers
        138|Dallas Mavericks
        139|Denver Nuggets
        140|Detroit Pistons
        141|Golden State Warriors
        142|Houston Rockets
        143|Indiana Pacers
        144|Los Angeles Clippers
        145|Los Angeles Lakers
        146|Memphis Grizzlies
        147|Miami Heat
        148|Milwaukee Bucks
        149|Minnesota Timberwolves
        150|New Orleans Pelicans
        151|New York Knicks
        152|Oklahoma City Thunder
        153|Orlando Magic
        154|Philadelphia 76ers
        155|Phoenix Suns
        156|Portland Trail Blazers
        157|Sacramento Kings
        158|San Antonio Spurs
        159|Toronto Raptors
        160|Utah Jazz
        161|Washington Wizards""")),
    (League(120, "Euroleague", "Europe", None), _teams("""
        1326|Real Madrid
        1316|Barcelona
        1343|Olympiacos
        1342|Panathinaikos
        1328|Fenerbahce
        1317|Anadolu Efes
        1336|Maccabi Tel Aviv
        1346|Zalgiris Kaunas
        1340|Partizan
        1321|Crvena Zvezda
        1337|Monaco
        1314|Bayern Munich
        1312|Baskonia
        1345|Virtus Bologna
        1339|Olimpia Milano
        1310|ASVEL""")),
]

HOCKEY: list[tuple[League, tuple[Team, ...]]] = [
    (League(57, "NHL", "USA", "us"), _teams("""
        670|Anaheim Ducks
        672|Boston Bruins
        673|Buffalo Sabres
        674|Calgary Flames
        675|Carolina Hurricanes
        676|Chicago Blackhawks
        677|Colorado Avalanche
        678|Columbus Blue Jackets
        679|Dallas Stars
        680|Detroit Red Wings
        681|Edmonton Oilers
        682|Florida Panthers
        683|Los Angeles Kings
        684|Minnesota Wild
        685|Montreal Canadiens
        686|Nashville Predators
        687|New Jersey Devils
        688|New York Islanders
        689|New York Rangers
        690|Ottawa Senators
        691|Philadelphia Flyers
        692|Pittsburgh Penguins
        693|San Jose Sharks
        1436|Seattle Kraken
        694|St. Louis Blues
        695|Tampa Bay Lightning
        696|Toronto Maple Leafs
        3962|Utah Hockey Club
        697|Vancouver Canucks
        698|Vegas Golden Knights
        699|Washington Capitals
        700|Winnipeg Jets""")),
]

#: Leagues that hold generated teams once the real ones are used up (big worlds).
EXTRA_LEAGUES: dict[str, list[League]] = {
    "football": [League(i, n, c, k, calendar=cal) for i, n, c, k, cal in [
        (40, "Championship", "England", "gb-eng", False), (79, "2. Bundesliga", "Germany", "de", False),
        (136, "Serie B", "Italy", "it", False), (141, "Segunda División", "Spain", "es", False),
        (62, "Ligue 2", "France", "fr", False), (88, "Eredivisie", "Netherlands", "nl", False),
        (94, "Primeira Liga", "Portugal", "pt", False), (144, "Jupiler Pro League", "Belgium", "be", False),
        (179, "Premiership", "Scotland", "gb-sct", False), (203, "Süper Lig", "Turkey", "tr", False),
        (253, "Major League Soccer", "USA", "us", True), (71, "Serie A", "Brazil", "br", True),
        (128, "Liga Profesional Argentina", "Argentina", "ar", True), (262, "Liga MX", "Mexico", "mx", False),
        (98, "J1 League", "Japan", "jp", True), (292, "K League 1", "South-Korea", "kr", True),
        (307, "Pro League", "Saudi-Arabia", "sa", False), (113, "Allsvenskan", "Sweden", "se", True),
        (103, "Eliteserien", "Norway", "no", True), (119, "Superliga", "Denmark", "dk", False),
        (218, "Bundesliga", "Austria", "at", False), (207, "Super League", "Switzerland", "ch", False),
        (197, "Super League 1", "Greece", "gr", False), (106, "Ekstraklasa", "Poland", "pl", False),
        (345, "Czech Liga", "Czech-Republic", "cz", False), (283, "Liga I", "Romania", "ro", False),
        (210, "HNL", "Croatia", "hr", False), (286, "Super Liga", "Serbia", "rs", False),
        (41, "League One", "England", "gb-eng", False), (42, "League Two", "England", "gb-eng", False),
    ]],
    "basketball": [League(i, n, c, k) for i, n, c, k in [
        (117, "ACB", "Spain", "es"), (52, "Lega A", "Italy", "it"), (2, "LNB", "France", "fr"),
        (15, "BBL", "Germany", "de"), (104, "Super Ligi", "Turkey", "tr"), (45, "A1", "Greece", "gr"),
        (31, "NBL", "Australia", "au"), (198, "CBA", "China", "cn"), (194, "ABA League", "Europe", None),
    ]],
    "hockey": [League(i, n, c, k) for i, n, c, k in [
        (35, "KHL", "Russia", "ru"), (47, "SHL", "Sweden", "se"), (16, "Liiga", "Finland", "fi"),
        (19, "DEL", "Germany", "de"), (51, "National League", "Switzerland", "ch"),
        (10, "Extraliga", "Czech-Republic", "cz"), (59, "AHL", "USA", "us"),
        (91, "ICE Hockey League", "Austria", "at"), (110, "Elite League", "United-Kingdom", "gb"),
    ]],
}

CITIES = (
    "Aberdeen Aarhus Almería Antwerpen Bari Bergen Bilbao Bochum Bordeaux Braga Brno Cádiz Cardiff "
    "Catania Córdoba Dresden Dundee Eindhoven Elche Essen Faro Gdańsk Genova Gijón Graz Groningen "
    "Hamburg Hannover Huelva Izmir Kassel Kiel Kraków Leeds León Lille Linz Livorno Lugano Luzern "
    "Málaga Malmö Metz Modena Murcia Nancy Nantes Odense Oviedo Padova Palermo Parma Perugia Plzeň "
    "Porto Reims Rostock Salerno Sevilla Split Tampere Toledo Trieste Tromsø Turku Utrecht Växjö Zürich"
).split()
SUFFIXES = {
    "football": ("FC", "United", "City", "Athletic", "Rovers", "Sporting", "Wanderers", "SC"),
    "basketball": ("Basket", "Giants", "Titans", "Lions", "Stars", "Falcons"),
    "hockey": ("HC", "Tigers", "Wolves", "Eagles", "Bears", "Sharks"),
}
EXTRA_TEAM_ID = {"football": 30_000, "basketball": 5_000, "hockey": 4_000}
EXTRA_LEAGUE_SIZE = 16
COUNTRY_IDS = {"England": 10, "Spain": 9, "Italy": 768, "Germany": 25, "France": 2, "World": 1,
               "USA": 5, "Europe": 18, "Russia": 14, "Sweden": 23, "Finland": 20}


def league_pools(sport: str, n: int) -> list[tuple[League, tuple[Team, ...]]]:
    """Leagues with their teams, enough for ``n`` matches in which no team plays twice."""
    pools = list({"football": FOOTBALL, "basketball": BASKETBALL, "hockey": HOCKEY}[sport])
    capacity = sum(len(teams) // 2 for _, teams in pools)
    extra = EXTRA_LEAGUES[sport]
    j = 0
    while capacity < n:
        k, base = divmod(len(pools) - len({"football": FOOTBALL, "basketball": BASKETBALL,
                                           "hockey": HOCKEY}[sport]), len(extra))
        tmpl = extra[base]
        lg = League(tmpl.id + 10_000 * k, tmpl.name + (f" {k + 1}" if k else ""), tmpl.country,
                    tmpl.code, tmpl.cup, tmpl.calendar)
        teams = []
        for _ in range(EXTRA_LEAGUE_SIZE):
            city = CITIES[j % len(CITIES)]
            suffix = SUFFIXES[sport][(j // len(CITIES)) % len(SUFFIXES[sport])]
            rnd = j // (len(CITIES) * len(SUFFIXES[sport]))
            name = f"{city} {suffix}" + (f" {rnd + 1}" if rnd else "")
            tid = EXTRA_TEAM_ID[sport] + j
            teams.append(Team(tid, name, 90_000 + tid, f"Estadio {city}" if sport == "football"
                              else f"{city} Arena", city))
            j += 1
        pools.append((lg, tuple(teams)))
        capacity += EXTRA_LEAGUE_SIZE // 2
    return pools


def _country(lg: League) -> dict[str, Any]:
    return {"id": COUNTRY_IDS.get(lg.country, zlib.crc32(lg.country.encode()) % 200 + 30),
            "name": lg.country, "code": lg.code.split("-")[0].upper() if lg.code else None,
            "flag": f"{MEDIA}/flags/{lg.code}.svg" if lg.code else None}


def season_start_year(ts: float) -> int:
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return d.year if d.month >= 7 else d.year - 1


# -- generation shared by the sports ----------------------------------------------------------


def poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def kickoffs(rng: random.Random, n: int, start: float, live_span: float) -> list[tuple[float, str]]:
    """Start times for ``n`` matches, each with its role: ``live``, ``soon`` or ``day``.

    A share is already in play at ``start`` (started within ``live_span`` seconds,
    spread so that every phase of play is represented) and a few start within five
    simulated minutes: a run at speed 60 sees scores change within a real minute.
    The rest start on quarter hours from eight hours before to sixteen after.
    """
    n_live = min(n, max(3, round(n * 0.2)))
    n_soon = min(n - n_live, max(2, round(n * 0.1)))
    out: list[tuple[float, str]] = []
    step = live_span / n_live
    for i in range(n_live):
        out.append((float(int(start - i * step - rng.uniform(60, step))), "live"))
    for _ in range(n_soon):
        out.append((float(int(start + rng.uniform(30, 300))), "soon"))
    for _ in range(n - n_live - n_soon):
        t = start + rng.uniform(-8 * 3600, 16 * 3600)
        out.append((float(int(t // 900 * 900)), "day"))
    return out


def allocate(rng: random.Random, sport: str, n: int, start: float,
             live_span: float) -> list[tuple[League, Team, Team, float, str]]:
    """``n`` fixtures: league, home, away, start time and fate (play, postponed, cancelled)."""
    pools = [(lg, list(teams)) for lg, teams in league_pools(sport, n)]
    for _, teams in pools:
        rng.shuffle(teams)
    pairs: list[tuple[League, Team, Team]] = []
    while len(pairs) < n:
        for lg, teams in pools:
            if len(teams) >= 2 and len(pairs) < n:
                pairs.append((lg, teams.pop(), teams.pop()))
    rng.shuffle(pairs)
    times = kickoffs(rng, n, start, live_span)
    day = [i for i, (_, role) in enumerate(times) if role == "day"]
    rng.shuffle(day)
    n_post = max(1, n // 15) if len(day) >= 4 else 0
    n_canc = max(1, n // 30) if len(day) >= 8 else 0
    fates = {i: "postponed" for i in day[:n_post]}
    fates.update({i: "cancelled" for i in day[n_post:n_post + n_canc]})
    return [(lg, h, a, times[i][0], fates.get(i, "play")) for i, (lg, h, a) in enumerate(pairs)]


def _iso(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).isoformat()


# -- football ---------------------------------------------------------------------------------

FOOTBALL_LONG = {
    "TBD": "Time To Be Defined", "NS": "Not Started", "1H": "First Half", "HT": "Halftime",
    "2H": "Second Half", "ET": "Extra Time", "BT": "Break Time", "P": "Penalty In Progress",
    "SUSP": "Match Suspended", "INT": "Match Interrupted", "FT": "Match Finished",
    "AET": "Match Finished", "PEN": "Match Finished", "PST": "Match Postponed",
    "CANC": "Match Cancelled", "ABD": "Match Abandoned", "AWD": "Technical Loss",
    "WO": "WalkOver", "LIVE": "In Progress",
}
FOOTBALL_LIVE = frozenset({"1H", "HT", "2H", "ET", "BT", "P", "SUSP", "INT", "LIVE"})
FORMATIONS = {"4-3-3": (4, 3, 3), "4-4-2": (4, 4, 2), "4-2-3-1": (4, 2, 3, 1),
              "3-5-2": (3, 5, 2), "3-4-3": (3, 4, 3), "4-1-4-1": (4, 1, 4, 1)}
INITIALS = "ABCDEFGHIJKLMNOPRSTVWY"
SURNAMES = (
    "Silva Müller Fernández García Rossi Martínez Schmidt Dubois Costa Novak Jensen Kovač Ødegaard "
    "Yılmaz Almeida Andersen Bernard Bianchi Blanco Bruno Castro Çelik Conti Cruz Dias Diallo "
    "Fischer Fontaine Gomes Greco Hansen Herrera Hoffmann Johansson Keller Kim Koch König Lambert "
    "Larsen Lehmann Lopes Marino Mendes Meyer Moreau Moreno Nielsen Núñez Ortega Pereira Petit "
    "Ramos Ricci Rodrigues Romero Ruiz Santos Schneider Sousa Suárez Torres Traoré Vargas Weber "
    "Wolf Zimmermann Żukowski Navarro Dembélé Okafor Mensah Kane Walker Hughes Byrne Murphy Doyle"
).split()
REFEREES = ("M. Oliver", "A. Taylor", "S. Marciniak", "C. Turpin", "D. Orsato", "F. Zwayer",
            "J. M. Sánchez", "C. Kavanagh", "S. Vincic", "D. Massa", "F. Letexier", "I. Kovács",
            "A. Madley", "J. Gil Manzano", "M. Guida", "D. Siebert")
STAT_TYPES = ("Shots on Goal", "Shots off Goal", "Total Shots", "Blocked Shots",
              "Shots insidebox", "Shots outsidebox", "Fouls", "Corner Kicks", "Offsides",
              "Ball Possession", "Yellow Cards", "Red Cards", "Goalkeeper Saves", "Total passes",
              "Passes accurate", "Passes %", "expected_goals")


@dataclass(frozen=True)
class Player:
    id: int
    name: str
    number: int
    pos: str
    grid: str | None


@dataclass(frozen=True)
class Squad:
    team: Team
    formation: str
    xi: tuple[Player, ...]
    bench: tuple[Player, ...]
    coach: tuple[int, str]
    colors: tuple[str, ...]  # player primary, number, border; goalkeeper primary, number, border


def squad_of(team: Team) -> Squad:
    """A team's squad: the same whatever the world, as a real team's would be."""
    rng = random.Random(f"squad:{team.id}")
    names: set[str] = set()
    numbers = {1}

    def person() -> str:
        while True:
            name = f"{rng.choice(INITIALS)}. {rng.choice(SURNAMES)}"
            if name not in names:
                names.add(name)
                return name

    def number() -> int:
        while True:
            k = rng.randint(2, 45)
            if k not in numbers:
                numbers.add(k)
                return k

    formation = rng.choice(sorted(FORMATIONS))
    rows = FORMATIONS[formation]
    base = 100_000 + team.id * 50
    xi = [Player(base, person(), 1, "G", "1:1")]
    for r, count in enumerate(rows, start=2):
        pos = "D" if r == 2 else ("F" if r == len(rows) + 1 else "M")
        for c in range(count, 0, -1):
            xi.append(Player(base + len(xi), person(), number(), pos, f"{r}:{c}"))
    bench = [Player(base + 11 + i, person(), number(), pos, None) for i, pos in enumerate("GDDDMMMFF")]
    colors = tuple(f"{rng.randrange(1 << 24):06x}" for _ in range(6))
    return Squad(team, formation, tuple(xi), tuple(bench), (5_000 + team.id, person()), colors)


@dataclass
class FootballEvent:
    at: int  # seconds after kick-off when it appears
    gone: int | None  # seconds after kick-off when it disappears (a goal VAR takes back)
    elapsed: int
    extra: int | None
    side: int  # 0 home, 1 away: the team the event is credited to
    player: Player
    assist: Player | None
    type: str
    detail: str
    comments: str | None
    part: str  # 1H, 2H, ET, P
    scores: bool = False
    order: int = 0

    def visible(self, off: int) -> bool:
        return self.at <= off and (self.gone is None or self.gone > off)


class FootballMatch:
    """One fixture's plan; every answer about it is computed from the plan and a time."""

    def __init__(self, mid: int, league: League, season: int, rnd: str, home: Squad, away: Squad,
                 kickoff: float, fate: str, referee: str, bounds: dict[str, int], et: bool,
                 pens: bool, events: list[FootballEvent], stats: list[dict[str, float]],
                 lineup_at: int, ratings: dict[int, str]) -> None:
        self.id, self.league, self.season, self.round = mid, league, season, rnd
        self.sides = (home, away)
        self.home, self.away = home.team, away.team
        self.kickoff, self.fate, self.referee = kickoff, fate, referee
        self.b, self.et, self.pens = bounds, et, pens
        self.events, self.stats, self.lineup_at, self.ratings = events, stats, lineup_at, ratings

    # -- the plan -------------------------------------------------------------------------

    @classmethod
    def generate(cls, rng: random.Random, mid: int, league: League, home: Team, away: Team,
                 kickoff: float, fate: str, world_start: float) -> FootballMatch:
        s1, s2, e1, e2 = rng.randint(1, 5), rng.randint(2, 8), rng.randint(0, 2), rng.randint(0, 3)
        b = {"h1": (45 + s1) * 60}
        b["ht"] = b["h1"] + 900
        b["h2"] = b["ht"] + (45 + s2) * 60
        b["bt1"] = b["h2"] + 300
        b["et1"] = b["bt1"] + (15 + e1) * 60
        b["bt2"] = b["et1"] + 120
        b["et2"] = b["bt2"] + (15 + e2) * 60
        parts = {"1H": (0, 45 + s1, 1, 45), "2H": (b["ht"], 45 + s2, 46, 90),
                 "ET1": (b["bt1"], 15 + e1, 91, 105), "ET2": (b["bt2"], 15 + e2, 106, 120)}
        reg = [poisson(rng, 1.45), poisson(rng, 1.15)]
        if league.cup and rng.random() < 0.5:
            reg[1] = reg[0]
        et = league.cup and reg[0] == reg[1]
        added = [poisson(rng, 0.35), poisson(rng, 0.35)] if et else [0, 0]
        pens = et and added[0] == added[1]
        sq = (squad_of(home), squad_of(away))

        specs: list[tuple[int, int, str, str, int, str]] = []  # at, side, kind, part, idx, detail

        def place(side: int, kind: str, choices: tuple[str, ...], weights: tuple[float, ...],
                  detail: str = "", lo: int = 0) -> None:
            part = rng.choices(choices, weights=weights)[0]
            start, n, _, _ = parts[part]
            idx = rng.randrange(min(lo, n - 1), n)
            specs.append((start + idx * 60 + rng.randint(1, 58), side, kind, part, idx, detail))

        reg_w = (45 + s1, 45 + s2)
        for side in (0, 1):
            for _ in range(reg[side]):
                detail = rng.choices(("Normal Goal", "Own Goal", "Penalty"), weights=(80, 7, 13))[0]
                place(side, "goal", ("1H", "2H"), reg_w, detail)
            for _ in range(added[side]):
                place(side, "goal", ("ET1", "ET2"), (1, 1), rng.choices(
                    ("Normal Goal", "Penalty"), weights=(85, 15))[0])
            for _ in range(rng.choice((3, 4, 4, 5, 5))):
                place(side, "sub", ("2H",), (1,), lo=10)
            if et and rng.random() < 0.7:
                place(side, "sub", ("ET1", "ET2"), (1, 1))
        if rng.random() < 0.12:
            place(rng.randrange(2), "miss", ("1H", "2H"), reg_w, "Missed Penalty")
        if rng.random() < 0.15:
            place(rng.randrange(2), "var", ("1H", "2H"), reg_w, "Normal Goal")
        for _ in range(poisson(rng, 3.6)):
            place(rng.randrange(2), "yellow", ("1H", "2H"), (40, 60))
        if et:
            for _ in range(poisson(rng, 0.8)):
                place(rng.randrange(2), "yellow", ("ET1", "ET2"), (1, 1))
        if rng.random() < 0.07:
            place(rng.randrange(2), "red", ("1H", "2H"), (30, 70))
        specs.sort()

        def clock(part: str, idx: int) -> tuple[int, int | None]:
            _, _, first, cap = parts[part]
            m = first + idx
            return (m, None) if m <= cap else (cap, m - cap)

        def pick(pool: list[Player], weights: dict[str, int]) -> Player:
            return rng.choices(pool, weights=[weights.get(p.pos, 1) for p in pool])[0]

        attack = {"F": 6, "M": 3, "D": 1, "G": 0}
        on = [list(sq[0].xi), list(sq[1].xi)]
        bench = [list(sq[0].bench), list(sq[1].bench)]
        booked: set[int] = set()
        n_subs = [0, 0]
        events: list[FootballEvent] = []
        for at, side, kind, part, idx, detail in specs:
            elapsed, extra = clock(part, idx)
            where = "ET" if part.startswith("ET") else part
            mine = [p for p in on[side] if p.pos != "G"]
            if not mine:
                continue
            if kind == "sub":
                fresh = [p for p in bench[side] if p.pos != "G"]
                if not fresh:
                    continue
                out = rng.choice(mine)
                same = [p for p in fresh if p.pos == out.pos] or fresh
                inn = rng.choice(same)
                on[side].remove(out)
                on[side].append(inn)
                bench[side].remove(inn)
                n_subs[side] += 1
                events.append(FootballEvent(at, None, elapsed, extra, side, out, inn, "subst",
                                            f"Substitution {n_subs[side]}", None, where))
            elif kind in ("goal", "var", "miss"):
                if detail == "Own Goal":
                    theirs = [p for p in on[1 - side] if p.pos != "G"]
                    scorer = pick(theirs, {"D": 5, "M": 2, "F": 1})
                else:
                    scorer = pick(mine, attack)
                others = [p for p in mine if p != scorer]
                assist = rng.choice(others) if detail == "Normal Goal" and others and rng.random() < 0.7 else None
                gone = None
                if kind == "var":
                    start, n, _, _ = parts[part]
                    gone = at + rng.randint(60, 150)
                    if gone >= start + n * 60:
                        continue
                    v_el, v_ex = clock(part, (gone - start) // 60)
                    events.append(FootballEvent(gone, None, v_el, v_ex, side, scorer, None, "Var",
                                                "Goal cancelled", None, where))
                events.append(FootballEvent(at, gone, elapsed, extra, side, scorer, assist, "Goal",
                                            detail, None, where, scores=kind != "miss"))
            elif kind == "yellow":
                unbooked = [p for p in mine if p.id not in booked]
                if unbooked:
                    who = rng.choice(unbooked)
                    booked.add(who.id)
                    events.append(FootballEvent(at, None, elapsed, extra, side, who, None, "Card",
                                                "Yellow Card", rng.choice(("Foul", "Foul", "Argument",
                                                                           "Time wasting")), where))
            elif kind == "red":
                who = rng.choice(mine)
                on[side].remove(who)
                events.append(FootballEvent(at, None, elapsed, extra, side, who, None, "Card",
                                            "Red Card", "Foul", where))
        events.sort(key=lambda e: e.at)
        for i, e in enumerate(events):
            e.order = i
        b["p"] = b["et2"]
        if pens:
            kicks = cls._shootout(rng, on, b["et2"])
            b["p"] = kicks[-1].at + 30
            shuffled = list(range(len(kicks)))
            rng.shuffle(shuffled)
            for k, e in zip(shuffled, kicks):
                e.order = len(events) + k
            events += kicks
        stats = [cls._stat_plan(rng) for _ in (0, 1)]
        poss = rng.randint(35, 65)
        stats[0]["possession"], stats[1]["possession"] = poss, 100 - poss
        ratings = {p.id: f"{rng.uniform(5.8, 8.6):.1f}".rstrip("0").rstrip(".")
                   for s in sq for p in s.xi + s.bench}
        year = (dt.datetime.fromtimestamp(world_start, dt.timezone.utc).year if league.calendar
                else season_start_year(world_start))
        if league.cup:
            rnd = "Round of 16"
        else:
            week = int((world_start - dt.datetime(year, 8, 10, tzinfo=dt.timezone.utc).timestamp()) // 604_800)
            rnd = f"Regular Season - {min(34, max(1, week + 1))}"
        return cls(mid, league, year, rnd, sq[0], sq[1], kickoff, fate, rng.choice(REFEREES), b,
                   et, pens, events, stats, -rng.randint(20, 40) * 60, ratings)

    @staticmethod
    def _shootout(rng: random.Random, on: list[list[Player]], start: int) -> list[FootballEvent]:
        order = {"F": 0, "M": 1, "D": 2, "G": 3}
        takers = [sorted(team, key=lambda p: (order[p.pos], p.id)) for team in on]
        first = rng.randrange(2)
        made, taken = [0, 0], [0, 0]
        kicks: list[FootballEvent] = []
        while True:
            side = first if len(kicks) % 2 == 0 else 1 - first
            scored = rng.random() < 0.76
            if len(kicks) > 30 and taken[0] == taken[1] + (1 if side == 1 else 0):
                scored = side == first  # settle an endless sudden death
            who = takers[side][taken[side] % len(takers[side])]
            taken[side] += 1
            made[side] += scored
            n = len(kicks) + 1
            kicks.append(FootballEvent(start + 60 + n * 60 + rng.randint(0, 40), None, 120, n, side,
                                       who, None, "Goal", "Penalty" if scored else "Missed Penalty",
                                       "Penalty Shootout", "P", scores=scored))
            if max(taken) <= 5:
                left = [5 - taken[0], 5 - taken[1]]
                if made[0] + left[0] < made[1] or made[1] + left[1] < made[0]:
                    return kicks
            elif taken[0] == taken[1] and made[0] != made[1]:
                return kicks

    @staticmethod
    def _stat_plan(rng: random.Random) -> dict[str, float]:
        return {"on": rng.randint(2, 9), "off": rng.randint(2, 9), "blocked": rng.randint(1, 6),
                "fouls": rng.randint(7, 18), "corners": rng.randint(1, 10),
                "offsides": rng.randint(0, 5), "passes": rng.randint(320, 720),
                "accuracy": rng.randint(72, 91), "xg": round(rng.uniform(0.3, 2.9), 2)}

    # -- state at a time ------------------------------------------------------------------

    def status(self, at: float) -> tuple[str, int | None, int | None]:
        """(short, elapsed, extra) at simulated time ``at``."""
        if self.fate == "postponed":
            return "PST", None, None
        if self.fate == "cancelled":
            return "CANC", None, None
        off = int(at - self.kickoff)
        b = self.b
        if off < 0:
            return "NS", None, None

        def running(start: int, first: int, cap: int) -> tuple[int, int | None]:
            m = first + (off - start) // 60
            return (m, None) if m <= cap else (cap, m - cap)

        if off < b["h1"]:
            return ("1H", *running(0, 1, 45))
        if off < b["ht"]:
            return "HT", 45, None
        if off < b["h2"]:
            return ("2H", *running(b["ht"], 46, 90))
        if not self.et:
            return "FT", 90, None
        if off < b["bt1"]:
            return "BT", 90, None
        if off < b["et1"]:
            return ("ET", *running(b["bt1"], 91, 105))
        if off < b["bt2"]:
            return "BT", 105, None
        if off < b["et2"]:
            return ("ET", *running(b["bt2"], 106, 120))
        if not self.pens:
            return "AET", 120, None
        if off < b["p"]:
            return "P", 120, None
        return "PEN", 120, None

    def is_live(self, at: float) -> bool:
        return self.status(at)[0] in FOOTBALL_LIVE

    def _tally(self, off: int, parts: tuple[str, ...]) -> dict[str, int]:
        n = [0, 0]
        for e in self.events:
            if e.scores and e.part in parts and e.visible(off):
                n[e.side] += 1
        return {"home": n[0], "away": n[1]}

    def score(self, at: float) -> dict[str, dict[str, int | None]]:
        """``goals`` and ``score`` (halftime, fulltime, extratime, penalty) at ``at``."""
        off = int(at - self.kickoff)
        none = {"home": None, "away": None}
        if self.fate != "play" or off < 0:
            return {"goals": none, "halftime": none, "fulltime": none, "extratime": none, "penalty": none}
        b = self.b
        return {
            "goals": self._tally(off, ("1H", "2H", "ET")),
            "halftime": self._tally(off, ("1H",)),
            "fulltime": self._tally(off, ("1H", "2H")) if off >= b["h2"] else none,
            "extratime": self._tally(off, ("ET",)) if self.et and off >= b["bt1"] else none,
            "penalty": self._tally(off, ("P",)) if self.pens and off >= b["et2"] else none,
        }

    def _team(self, side: int) -> dict[str, Any]:
        t = self.sides[side].team
        return {"id": t.id, "name": t.name, "logo": f"{MEDIA}/football/teams/{t.id}.png"}

    def item(self, at: float, tz: dt.tzinfo, detail: str = "basic") -> dict[str, Any]:
        """One ``response[]`` item: ``basic`` (date, league), ``live`` (+ events) or ``full``."""
        off = int(at - self.kickoff)
        short, elapsed, extra = self.status(at)
        played = self.fate == "play" and off >= 0
        sc = self.score(at)
        winner: tuple[bool | None, bool | None] = (None, None)
        if played:
            g, p = sc["goals"], sc["penalty"]
            h, a = (g["home"], g["away"]) if g["home"] != g["away"] or p["home"] is None else (p["home"], p["away"])
            if h != a:
                winner = (h > a, a > h)
        teams = {}
        for side, key in ((0, "home"), (1, "away")):
            teams[key] = {**self._team(side), "winner": winner[side]}
        home = self.home
        out: dict[str, Any] = {
            "fixture": {
                "id": self.id,
                "referee": self.referee if off >= self.lineup_at and self.fate == "play" else None,
                "timezone": str(tz),
                "date": _iso(self.kickoff, tz),
                "timestamp": int(self.kickoff),
                "periods": {"first": int(self.kickoff) if played else None,
                            "second": int(self.kickoff) + self.b["ht"] if played and off >= self.b["ht"] else None},
                "venue": {"id": home.venue_id, "name": home.venue, "city": home.city},
                "status": {"long": FOOTBALL_LONG[short], "short": short, "elapsed": elapsed, "extra": extra},
            },
            "league": {
                "id": self.league.id, "name": self.league.name, "country": self.league.country,
                "logo": f"{MEDIA}/football/leagues/{self.league.id}.png",
                "flag": f"{MEDIA}/flags/{self.league.code}.svg" if self.league.code else None,
                "season": self.season, "round": self.round,
            },
            "teams": teams,
            "goals": sc["goals"],
            "score": {k: sc[k] for k in ("halftime", "fulltime", "extratime", "penalty")},
        }
        if detail in ("live", "full"):
            out["events"] = self.events_at(at)
        if detail == "full":
            out["lineups"] = self.lineups_at(at)
            out["statistics"] = self.statistics_at(at)
            out["players"] = self.players_at(at)
        return out

    def events_at(self, at: float) -> list[dict[str, Any]]:
        if self.fate != "play":
            return []
        off = int(at - self.kickoff)
        shown = sorted((e for e in self.events if e.visible(off)), key=lambda e: e.order)
        return [{
            "time": {"elapsed": e.elapsed, "extra": e.extra},
            "team": self._team(e.side),
            "player": {"id": e.player.id, "name": e.player.name},
            "assist": {"id": e.assist.id if e.assist else None, "name": e.assist.name if e.assist else None},
            "type": e.type, "detail": e.detail, "comments": e.comments,
        } for e in shown]

    def _minute(self, off: int) -> int:
        """Minutes of play so far (stoppage included), for statistics."""
        short, elapsed, extra = self.status(self.kickoff + off)
        if elapsed is None:
            return 0
        return min(elapsed + (extra or 0), 125)

    def statistics_at(self, at: float) -> list[dict[str, Any]]:
        off = int(at - self.kickoff)
        if self.fate != "play" or off < 0:
            return []
        f = self._minute(off) / 90
        goals = self._tally(off, ("1H", "2H", "ET"))
        cards = [[0, 0], [0, 0]]
        for e in self.events:
            if e.type == "Card" and e.visible(off):
                cards[e.side][0 if e.detail == "Yellow Card" else 1] += 1
        on = [max(int(self.stats[s]["on"] * f), goals["home" if s == 0 else "away"]) for s in (0, 1)]
        out = []
        for s in (0, 1):
            p = self.stats[s]
            off_t, blocked = int(p["off"] * f), int(p["blocked"] * f)
            total = on[s] + off_t + blocked
            inside = round(total * 0.65)
            passes = int(p["passes"] * f)
            conceded = goals["away" if s == 0 else "home"]
            values: list[Any] = [on[s], off_t, total, blocked, inside, total - inside,
                                 int(p["fouls"] * f), int(p["corners"] * f), int(p["offsides"] * f),
                                 f"{int(p['possession'])}%", cards[s][0], cards[s][1],
                                 max(0, on[1 - s] - conceded), passes,
                                 round(passes * p["accuracy"] / 100), f"{int(p['accuracy'])}%",
                                 f"{p['xg'] * f:.2f}"]
            out.append({"team": self._team(s), "statistics": [
                {"type": t, "value": (None if v == 0 else v)} for t, v in zip(STAT_TYPES, values)]})
        return out

    def lineups_at(self, at: float, *, endpoint: bool = False) -> list[dict[str, Any]]:
        off = int(at - self.kickoff)
        if self.fate != "play" or off < self.lineup_at:
            return []
        out = []
        for s, sq in enumerate(self.sides):
            c = sq.colors
            team = {**self._team(s), "colors": {
                "player": {"primary": c[0], "number": c[1], "border": c[2]},
                "goalkeeper": {"primary": c[3], "number": c[4], "border": c[5]}}}
            coach = {"id": sq.coach[0], "name": sq.coach[1],
                     "photo": f"{MEDIA}/football/coachs/{sq.coach[0]}.png"}
            xi = [{"player": {"id": p.id, "name": p.name, "number": p.number, "pos": p.pos,
                              "grid": p.grid}} for p in sq.xi]
            subs = [{"player": {"id": p.id, "name": p.name, "number": p.number, "pos": p.pos,
                                "grid": None}} for p in sq.bench]
            if endpoint:
                out.append({"team": team, "formation": sq.formation, "startXI": xi, "substitutes": subs,
                            "coach": coach})
            else:
                out.append({"team": team, "coach": coach, "formation": sq.formation, "startXI": xi,
                            "substitutes": subs})
        return out

    def players_at(self, at: float) -> list[dict[str, Any]]:
        off = int(at - self.kickoff)
        if self.fate != "play" or off < 0:
            return []
        now_min = self._minute(off)
        shown = [e for e in self.events if e.visible(off) and e.part != "P"]
        stats = self.statistics_at(at)
        out = []
        for s, sq in enumerate(self.sides):
            came_on = {e.assist.id: e.elapsed for e in shown if e.type == "subst" and e.side == s and e.assist}
            went_off = {e.player.id: e.elapsed for e in shown if e.side == s and (
                e.type == "subst" or e.detail == "Red Card")}
            conceded = self._tally(off, ("1H", "2H", "ET"))["away" if s == 0 else "home"]
            saves = stats[s]["statistics"][12]["value"] if stats else None
            rows = []
            for p in sq.xi + sq.bench:
                start = 0 if p.grid else came_on.get(p.id)
                minutes = None if start is None else max(0, went_off.get(p.id, now_min) - start)
                scored = sum(1 for e in shown if e.type == "Goal" and e.player.id == p.id
                             and e.detail in ("Normal Goal", "Penalty") and e.side == s)
                assists = sum(1 for e in shown if e.type == "Goal" and e.assist and e.assist.id == p.id)
                pens = [e.detail for e in shown if e.type == "Goal" and e.player.id == p.id
                        and e.detail in ("Penalty", "Missed Penalty")]
                yellow = sum(1 for e in shown if e.player.id == p.id and e.detail == "Yellow Card")
                red = sum(1 for e in shown if e.player.id == p.id and e.detail == "Red Card")
                keeper = p.pos == "G"
                rows.append({
                    "player": {"id": p.id, "name": p.name, "photo": f"{MEDIA}/football/players/{p.id}.png"},
                    "statistics": [{
                        "games": {"minutes": minutes, "number": p.number, "position": p.pos,
                                  "rating": self.ratings[p.id] if minutes else None,
                                  "captain": p == sq.xi[5], "substitute": p.grid is None},
                        "offsides": None,
                        "shots": {"total": None, "on": None},
                        "goals": {"total": scored or None, "conceded": conceded if keeper else 0,
                                  "assists": assists or None, "saves": saves if keeper else None},
                        "passes": {"total": None, "key": None, "accuracy": None},
                        "tackles": {"total": None, "blocks": None, "interceptions": None},
                        "duels": {"total": None, "won": None},
                        "dribbles": {"attempts": None, "success": None, "past": None},
                        "fouls": {"drawn": None, "committed": None},
                        "cards": {"yellow": yellow, "red": red},
                        "penalty": {"won": None, "commited": None, "scored": pens.count("Penalty"),
                                    "missed": pens.count("Missed Penalty"), "saved": 0 if keeper else None},
                    }],
                })
            out.append({"team": {**self._team(s), "update": _iso(at, dt.timezone.utc)}, "players": rows})
        return out


# -- basketball and hockey --------------------------------------------------------------------

BASKETBALL_LONG = {
    "NS": "Not Started", "Q1": "Quarter 1", "Q2": "Quarter 2", "Q3": "Quarter 3",
    "Q4": "Quarter 4", "OT": "Over Time", "BT": "Break Time", "HT": "Halftime",
    "FT": "Game Finished", "AOT": "After Over Time", "POST": "Game Postponed",
    "CANC": "Game Cancelled", "SUSP": "Game Suspended", "AWD": "Game Awarded",
    "ABD": "Game Abandoned",
}
HOCKEY_LONG = {
    "NS": "Not Started", "P1": "First Period", "P2": "Second Period", "P3": "Third Period",
    "OT": "Over Time", "PT": "Penalties Time", "BT": "Break Time", "AW": "Awarded",
    "POST": "Postponed", "CANC": "Cancelled", "INTR": "Interrupted", "ABD": "Abandoned",
    "AOT": "After Over Time", "AP": "After Penalties", "FT": "Finished",
}
GAME_LIVE = frozenset({"Q1", "Q2", "Q3", "Q4", "OT", "BT", "HT", "P1", "P2", "P3", "PT"})


@dataclass(frozen=True)
class Segment:
    start: int  # seconds after the start of the game
    end: int
    code: str
    period: int | None  # index of the period in play (0-based), None in a break
    minutes: int = 0  # length of the period on the game clock


@dataclass(frozen=True)
class Score:
    at: int
    side: int
    points: int
    period: int


class Game:
    """A basketball or hockey game: segments of play and breaks, and when points fell."""

    sport = ""
    long: dict[str, str] = {}

    def __init__(self, gid: int, league: League, season: Any, home: Team, away: Team,
                 kickoff: float, fate: str, segments: list[Segment], final: str,
                 scores: list[Score]) -> None:
        self.id, self.league, self.season, self.home, self.away = gid, league, season, home, away
        self.kickoff, self.fate, self.segments, self.final, self.scores = kickoff, fate, segments, final, scores

    def segment(self, at: float) -> Segment | None:
        off = int(at - self.kickoff)
        for seg in self.segments:
            if seg.start <= off < seg.end:
                return seg
        return None

    def code(self, at: float) -> str:
        if self.fate != "play":
            return "POST" if self.fate == "postponed" else "CANC"
        if at < self.kickoff:
            return "NS"
        seg = self.segment(at)
        return seg.code if seg else self.final

    def status(self, at: float) -> tuple[str, int | None, int | None]:
        return self.code(at), None, None

    def is_live(self, at: float) -> bool:
        return self.code(at) in GAME_LIVE

    def timer(self, at: float) -> str | None:
        seg = self.segment(at) if self.fate == "play" else None
        if seg is None or seg.period is None:
            return None
        done = (int(at - self.kickoff) - seg.start) / (seg.end - seg.start)
        return str(min(seg.minutes, int(done * seg.minutes) + 1))

    def points(self, at: float, period: int | None = None) -> list[int]:
        off = int(at - self.kickoff)
        n = [0, 0]
        for s in self.scores:
            if s.at <= off and (period is None or s.period == period):
                n[s.side] += s.points
        return n

    def started(self, at: float, period: int) -> bool:
        off = int(at - self.kickoff)
        return self.fate == "play" and any(s.period == period and s.start <= off for s in self.segments)

    def _head(self, at: float, tz: dt.tzinfo) -> dict[str, Any]:
        d = dt.datetime.fromtimestamp(self.kickoff, tz)
        return {"id": self.id, "date": d.isoformat(), "time": d.strftime("%H:%M"),
                "timestamp": int(self.kickoff), "timezone": str(tz)}

    def _team(self, t: Team) -> dict[str, Any]:
        return {"id": t.id, "name": t.name, "logo": f"{MEDIA}/{self.sport}/teams/{t.id}.png"}

    def _league(self) -> dict[str, Any]:
        return {"id": self.league.id, "name": self.league.name, "type": "League",
                "season": self.season, "logo": f"{MEDIA}/{self.sport}/leagues/{self.league.id}.png"}


def _plays(rng: random.Random, seg: Segment, side: int, total: int, chunks: tuple[int, ...],
           weights: tuple[int, ...]) -> list[Score]:
    out = []
    while total > 0:
        pts = min(total, rng.choices(chunks, weights=weights)[0])
        out.append(Score(rng.randint(seg.start + 5, seg.end - 5), side, pts, seg.period or 0))
        total -= pts
    return out


class BasketballGame(Game):
    sport = "basketball"
    long = BASKETBALL_LONG

    @classmethod
    def generate(cls, rng: random.Random, gid: int, league: League, home: Team, away: Team,
                 kickoff: float, fate: str, world_start: float) -> BasketballGame:
        qlen = 12 if league.id == 12 else 10
        wall = int(qlen * 60 * (2.0 if qlen == 12 else 1.8))
        mean = 28 if qlen == 12 else 20
        segs: list[Segment] = []
        t = 0
        for q, pause in enumerate((("BT", 130), ("HT", 900), ("BT", 130), None)):
            segs.append(Segment(t, t + wall, f"Q{q + 1}", q, qlen))
            t += wall
            if pause:
                segs.append(Segment(t, t + pause[1], pause[0], None))
                t += pause[1]
        totals = [[max(8, round(rng.gauss(mean, 5))) for _ in range(4)] for _ in (0, 1)]
        if rng.random() < 0.12:
            need = sum(totals[0]) - sum(totals[1][:3])
            if 8 <= need <= 50:
                totals[1][3] = need
        ot = 0
        while sum(totals[0]) == sum(totals[1]):
            segs.append(Segment(t, t + 120, "BT", None))
            ot_wall = int(5 * 60 * (wall / (qlen * 60)))
            segs.append(Segment(t + 120, t + 120 + ot_wall, "OT", 4 + ot, 5))
            t += 120 + ot_wall
            pts = [max(2, round(rng.gauss(mean * 5 / qlen, 3))) for _ in (0, 1)]
            if ot == 2 and pts[0] == pts[1]:
                pts[0] += 2
            totals[0].append(pts[0])
            totals[1].append(pts[1])
            ot += 1
        scores = []
        for seg in segs:
            if seg.period is not None:
                for side in (0, 1):
                    scores += _plays(rng, seg, side, totals[side][seg.period], (1, 2, 3), (15, 55, 30))
        scores.sort(key=lambda s: s.at)
        y = season_start_year(world_start)
        return cls(gid, league, f"{y}-{y + 1}", home, away, kickoff, fate, segs,
                   "AOT" if ot else "FT", scores)

    def item(self, at: float, tz: dt.tzinfo) -> dict[str, Any]:
        code = self.code(at)
        played = self.fate == "play" and at >= self.kickoff
        overtime = self.started(at, 4)
        sides = {}
        for side, key in ((0, "home"), (1, "away")):
            row: dict[str, int | None] = {}
            for q in range(4):
                row[f"quarter_{q + 1}"] = self.points(at, q)[side] if self.started(at, q) else None
            row["over_time"] = sum(self.points(at, p)[side] for p in range(4, 8)) if overtime else None
            row["total"] = self.points(at)[side] if played else None
            sides[key] = row
        return {
            **self._head(at, tz), "stage": None, "week": None,
            "status": {"long": self.long[code], "short": code, "timer": self.timer(at)},
            "league": self._league(), "country": _country(self.league),
            "teams": {"home": self._team(self.home), "away": self._team(self.away)},
            "scores": sides,
        }


class HockeyGame(Game):
    sport = "hockey"
    long = HOCKEY_LONG

    @classmethod
    def generate(cls, rng: random.Random, gid: int, league: League, home: Team, away: Team,
                 kickoff: float, fate: str, world_start: float) -> HockeyGame:
        wall, pause = 35 * 60, 17 * 60
        segs: list[Segment] = []
        t = 0
        for p in range(3):
            segs.append(Segment(t, t + wall, f"P{p + 1}", p, 20))
            t += wall
            if p < 2:
                segs.append(Segment(t, t + pause, "BT", None))
                t += pause
        goals = [[poisson(rng, 1.0) for _ in range(3)] for _ in (0, 1)]
        if rng.random() < 0.2:
            goals[1][2] = max(0, sum(goals[0]) - sum(goals[1][:2]))
        scores = [Score(rng.randint(seg.start + 5, seg.end - 5), side, 1, seg.period or 0)
                  for seg in segs if seg.period is not None
                  for side in (0, 1) for _ in range(goals[side][seg.period])]
        final = "FT"
        if sum(goals[0]) == sum(goals[1]):
            segs.append(Segment(t, t + 180, "BT", None))
            t += 180
            ot_wall = 8 * 60
            if rng.random() < 0.6:
                when = rng.randint(20, ot_wall - 20)
                scores.append(Score(t + when, rng.randrange(2), 1, 3))
                segs.append(Segment(t, t + when + 1, "OT", 3, 5))
                final = "AOT"
            else:
                segs.append(Segment(t, t + ot_wall, "OT", 3, 5))
                t += ot_wall
                segs.append(Segment(t, t + 480, "PT", 4, 0))
                made = [0, 0]
                rounds = 0
                while rounds < 3 or made[0] == made[1]:
                    for side in (0, 1):
                        if rng.random() < 0.33:
                            made[side] += 1
                            scores.append(Score(t + 30 + rounds * 40 + side * 20, side, 1, 4))
                    rounds += 1
                    if rounds >= 10 and made[0] == made[1]:
                        made[0] += 1
                        scores.append(Score(t + 30 + rounds * 40, 0, 1, 4))
                segs[-1] = Segment(t, t + 60 + rounds * 40, "PT", 4, 0)
                final = "AP"
        scores.sort(key=lambda s: s.at)
        return cls(gid, league, season_start_year(world_start), home, away, kickoff, fate, segs,
                   final, scores)

    def item(self, at: float, tz: dt.tzinfo) -> dict[str, Any]:
        code = self.code(at)
        played = self.fate == "play" and at >= self.kickoff
        periods: dict[str, str | None] = {}
        for p, name in enumerate(("first", "second", "third", "overtime", "penalties")):
            pts = self.points(at, p)
            periods[name] = f"{pts[0]}-{pts[1]}" if self.started(at, p) else None
        home = away = None
        if played:
            home, away = (sum(self.points(at, p)[s] for p in range(4)) for s in (0, 1))
            if code == "AP":
                shoot = self.points(at, 4)
                home += shoot[0] > shoot[1]
                away += shoot[1] > shoot[0]
        return {
            **self._head(at, tz), "week": None, "timer": self.timer(at),
            "status": {"long": self.long[code], "short": code},
            "league": {"id": self.league.id, "name": self.league.name, "type": "League",
                       "logo": f"{MEDIA}/hockey/leagues/{self.league.id}.png", "season": self.season},
            "country": _country(self.league),
            "teams": {"home": self._team(self.home), "away": self._team(self.away)},
            "scores": {"home": home, "away": away},
            "periods": periods,
            "events": True,
        }


# -- the world and its API --------------------------------------------------------------------

REQUIRED = {"required": "At least one parameter is required."}


def _name(field: str) -> str:
    return field[:1].upper() + field[1:]


def envelope(sport: str, get: str, params: Mapping[str, str], errors: Mapping[str, str] | None,
             response: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """The API-Sports envelope, keys in the real order; ``paging`` for football only."""
    env: dict[str, Any] = {
        "get": get,
        "parameters": dict(params) if params else [],
        "errors": dict(errors) if errors else [],
        "results": 0 if errors else (len(response) if isinstance(response, list) else 1),
    }
    if sport == "football":
        env["paging"] = {"current": 1, "total": 1}
    env["response"] = [] if errors else response
    return env


def _unknown(params: Mapping[str, str], allowed: set[str]) -> dict[str, str] | None:
    if not params:
        return REQUIRED
    for field, value in params.items():
        if field not in allowed:
            return {field: f"The {_name(field)} field do not exist."}
        if value == "":
            return {field: f"The {_name(field)} field must not be empty."}
    return None


def _integers(params: Mapping[str, str], *fields: str) -> dict[str, str] | None:
    for field in fields:
        if field in params and not params[field].isdigit():
            return {field: f"The {_name(field)} field must contain an integer."}
    return None


def _dates(params: Mapping[str, str], *fields: str) -> dict[str, str] | None:
    for field in fields:
        if field in params:
            try:
                ok = len(params[field]) == 10 and bool(dt.date.fromisoformat(params[field]))
            except ValueError:
                ok = False
            if not ok:
                return {field: f"The {_name(field)} field must contain a valid date (YYYY-MM-DD)."}
    return None


def _timezone(name: str) -> dt.tzinfo | None:
    if name == "UTC":
        return dt.timezone.utc
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


def _day(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).date().isoformat()


Errors = dict[str, str] | None


class World:
    """A simulated day of football, basketball and hockey that answers API requests.

    ``matches_per_sport`` overrides :data:`DEFAULT_SIZES` (a few hundred per sport for
    benchmarks). Matches start around ``clock.start``: some already in play, a few
    within minutes, the rest spread over the day.
    """

    def __init__(self, seed: int, clock: Clock, matches_per_sport: Mapping[str, int] | None = None) -> None:
        self.seed = seed
        self.clock = clock
        self.start = float(clock.start)
        sizes = {**DEFAULT_SIZES, **(matches_per_sport or {})}
        spans = {"football": 110 * 60, "basketball": 130 * 60, "hockey": 150 * 60}
        kinds: dict[str, Any] = {"football": FootballMatch, "basketball": BasketballGame,
                                 "hockey": HockeyGame}
        bases = {"football": 1_200_000, "basketball": 400_000, "hockey": 150_000}
        self._matches: dict[str, dict[int, Any]] = {}
        for sport in SPORTS:
            rng = random.Random(f"{seed}:{sport}:day")
            fixtures = sorted(allocate(rng, sport, sizes[sport], self.start, spans[sport]),
                              key=lambda f: (f[3], f[1].id))
            ids = sorted(rng.sample(range(bases[sport], bases[sport] + 300_000), len(fixtures)))
            self._matches[sport] = {
                mid: kinds[sport].generate(random.Random(f"{seed}:{sport}:{mid}"), mid, lg, home,
                                           away, kickoff, fate, self.start)
                for mid, (lg, home, away, kickoff, fate) in zip(ids, fixtures)
            }

    def now(self) -> float:
        return self.clock.now()

    def matches(self, sport: str) -> list[Any]:
        return list(self._matches[sport].values())

    def match(self, sport: str, match_id: int) -> Any:
        return self._matches[sport].get(match_id)

    def summary(self, at: float | None = None) -> dict[str, dict[str, int]]:
        """Matches per status code, per sport."""
        t = self.now() if at is None else at
        out: dict[str, dict[str, int]] = {}
        for sport, matches in self._matches.items():
            counts: dict[str, int] = {}
            for m in matches.values():
                code = m.status(t)[0]
                counts[code] = counts.get(code, 0) + 1
            out[sport] = dict(sorted(counts.items()))
        return out

    def fixtures_json(self, endpoint: str, params: Mapping[str, str], *, sport: str = "football",
                      now: float | None = None) -> tuple[int, dict[str, Any]]:
        """Answer ``endpoint`` with ``params`` at simulated time ``now`` (default: the clock).

        ``endpoint`` is the path below the API's root: ``fixtures``,
        ``fixtures/events``, ``games`` (a leading ``/`` or ``/v3/`` is accepted).
        Returns the HTTP status and body: the envelope, whose ``errors`` is an object
        for unknown or invalid parameters (HTTP 200), or 404 for an unknown endpoint.
        ``status`` is answered by :meth:`status_json`, which needs the account.
        """
        at = int(self.now() if now is None else now)
        get = endpoint.strip("/")
        if sport == "football" and get.startswith("v3/"):
            get = get[3:]
        params = {str(k): str(v) for k, v in params.items()}
        if sport == "football":
            handler = {"fixtures": self._fixtures, "fixtures/events": self._fixture_part,
                       "fixtures/statistics": self._fixture_part, "fixtures/lineups": self._fixture_part,
                       "fixtures/players": self._fixture_part}.get(get)
        elif sport in ("basketball", "hockey"):
            handler = self._games if get == "games" else None
        else:
            raise ValueError(f"unknown sport {sport!r}")
        if handler is None:
            return 404, {"message": f"Endpoint '/{get}' does not exist"}
        errors, response = handler(sport, get, params, at)
        return 200, envelope(sport, get, params, errors, response)

    def status_json(self, sport: str, *, plan: str, current: int, limit_day: int,
                    now: float | None = None) -> tuple[int, dict[str, Any]]:
        """``/status``: the account, its plan and today's count."""
        at = self.now() if now is None else now
        end = dt.datetime.fromtimestamp(at + 30 * 86_400, dt.timezone.utc).replace(microsecond=0)
        body = {
            "account": {"firstname": "Sim", "lastname": "Ulator", "email": "sim@bts-guru.invalid"},
            "subscription": {"plan": plan.capitalize(), "end": end.isoformat(), "active": True},
            "requests": {"current": current, "limit_day": limit_day},
        }
        return 200, envelope(sport, "status", {}, None, body)

    def _fixtures(self, sport: str, get: str, params: dict[str, str], at: int) -> tuple[Errors, list[Any]]:
        allowed = {"id", "ids", "live", "date", "league", "season", "team", "status", "timezone", "from", "to"}
        err = _unknown(params, allowed) or _integers(params, "id", "league", "team", "season")
        if err:
            return err, []
        tz = _timezone(params.get("timezone", "UTC"))
        if tz is None:
            return {"timezone": "The Timezone field must contain a valid timezone."}, []
        chosen = [k for k in ("id", "ids", "live") if k in params]
        rest = [k for k in params if k not in ("id", "ids", "live", "timezone")]
        if chosen and (len(chosen) > 1 or rest):
            clash = chosen[1] if len(chosen) > 1 else rest[0]
            return {chosen[0]: f"The {_name(chosen[0])} field cannot be used with the "
                               f"{_name(clash)} field."}, []
        matches = self._matches["football"]
        if "id" in params:
            m = matches.get(int(params["id"]))
            return None, [m.item(at, tz, "full")] if m else []
        if "ids" in params:
            parts = params["ids"].split("-")
            if not all(p.isdigit() for p in parts):
                return {"ids": "The Ids field must contain fixture ids separated by \"-\"."}, []
            if len(parts) > 20:
                return {"ids": "Maximum of 20 fixtures ids."}, []
            found = [matches[int(p)] for p in dict.fromkeys(parts) if int(p) in matches]
            return None, [m.item(at, tz, "full") for m in found]
        if "live" in params:
            live = params["live"]
            if live != "all" and not all(p.isdigit() for p in live.split("-")):
                return {"live": "The Live field must contain \"all\" or league ids separated by \"-\"."}, []
            leagues = None if live == "all" else {int(p) for p in live.split("-")}
            return None, [m.item(at, tz, "live") for m in matches.values()
                          if m.is_live(at) and (leagues is None or m.league.id in leagues)]
        err = _dates(params, "date", "from", "to")
        if err:
            return err, []
        if "league" in params and "season" not in params:
            return {"season": "The Season field is required."}, []
        if "season" in params and len(params["season"]) != 4:
            return {"season": "The Season field must contain 4 characters. Example : 2019"}, []
        if ("from" in params) != ("to" in params):
            missing = "to" if "from" in params else "from"
            return {missing: f"The {_name(missing)} field is required."}, []
        if not {"date", "league", "team", "from"} & set(params):
            return REQUIRED, []
        wanted = set(params["status"].split("-")) if "status" in params else None
        out = []
        for m in matches.values():
            day = _day(m.kickoff, tz)
            if ("date" in params and day != params["date"]) or \
                    ("from" in params and not params["from"] <= day <= params["to"]) or \
                    ("league" in params and m.league.id != int(params["league"])) or \
                    ("season" in params and m.season != int(params["season"])) or \
                    ("team" in params and int(params["team"]) not in (m.home.id, m.away.id)) or \
                    (wanted is not None and m.status(at)[0] not in wanted):
                continue
            out.append(m.item(at, tz, "basic"))
        return None, out

    def _fixture_part(self, sport: str, get: str, params: dict[str, str], at: int) -> tuple[Errors, list[Any]]:
        part = get.split("/")[1]
        allowed = {"events": {"fixture", "team", "player", "type"}, "lineups": {"fixture", "team", "player", "type"},
                   "statistics": {"fixture", "team", "type"}, "players": {"fixture", "team"}}[part]
        err = _unknown(params, allowed)
        if err:
            return err, []
        if "fixture" not in params:
            return {"fixture": "The Fixture field is required."}, []
        err = _integers(params, "fixture", "team", "player")
        if err:
            return err, []
        m = self._matches["football"].get(int(params["fixture"]))
        if m is None:
            return None, []
        team = int(params["team"]) if "team" in params else None
        items: list[dict[str, Any]]
        if part == "events":
            items = m.events_at(at)
            if "player" in params:
                items = [e for e in items if e["player"]["id"] == int(params["player"])]
            if "type" in params:
                items = [e for e in items if e["type"].lower() == params["type"].lower()]
        elif part == "statistics":
            items = m.statistics_at(at)
            if "type" in params:
                items = [{**s, "statistics": [v for v in s["statistics"] if v["type"] == params["type"]]}
                         for s in items]
        elif part == "lineups":
            items = m.lineups_at(at, endpoint=True)
        else:
            items = m.players_at(at)
        return None, [x for x in items if team is None or x["team"]["id"] == team]

    def _games(self, sport: str, get: str, params: dict[str, str], at: int) -> tuple[Errors, list[Any]]:
        err = _unknown(params, {"id", "date", "league", "season", "team", "timezone"}) \
            or _integers(params, "id", "league", "team") or _dates(params, "date")
        if err:
            return err, []
        tz = _timezone(params.get("timezone", "UTC"))
        if tz is None:
            return {"timezone": "The Timezone field must contain a valid timezone."}, []
        if "league" in params and "season" not in params:
            return {"season": "The Season field is required."}, []
        games = self._matches[sport]
        if "id" in params:
            g = games.get(int(params["id"]))
            return None, [g.item(at, tz)] if g else []
        if not {"date", "league", "team"} & set(params):
            return REQUIRED, []
        out = []
        for g in games.values():
            if ("date" in params and _day(g.kickoff, tz) != params["date"]) or \
                    ("league" in params and g.league.id != int(params["league"])) or \
                    ("season" in params and str(g.season) != params["season"]) or \
                    ("team" in params and int(params["team"]) not in (g.home.id, g.away.id)):
                continue
            out.append(g.item(at, tz))
        return None, out
