"""Words with a fixed meaning in requests: measures, comparisons, negation, time, order, fillers."""

from __future__ import annotations

# British spellings and common typos of the words the parser relies on, mapped to one spelling.
SPELLING = {
    # contractions typed without the apostrophe: the negation must never be lost
    "isnt": "isn't",
    "arent": "aren't",
    "wasnt": "wasn't",
    "werent": "weren't",
    "dont": "don't",
    "doesnt": "doesn't",
    "didnt": "didn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hadnt": "hadn't",
    "alphabetically": "ascending",
    "alphabetical": "ascending",
    "summarise": "summarize",
    "summarised": "summarized",
    "summarising": "summarizing",
    "catalogue": "catalog",
    "organisation": "organization",
    "analyse": "analyze",
    "normalise": "normalize",
    "totalled": "totaled",
    "cancelation": "cancellation",
    "cheapeast": "cheapest",
    "bigest": "biggest",
    "higest": "highest",
    "hightest": "highest",
    "smalest": "smallest",
    "largets": "largest",
    "lowets": "lowest",
    "ammount": "amount",
    "amout": "amount",
    "ammount_": "amount",
    "custmer": "customer",
    "colum": "column",
    "coloumn": "column",
    "collumn": "column",
    "colums": "columns",
    "coloumns": "columns",
    "custmers": "customers",
    "cusotmers": "customers",
    "costumers": "customers",
    "oders": "orders",
    "ordres": "orders",
    "prodcuts": "products",
    "prodcut": "product",
    "avarage": "average",
    "averge": "average",
    "avergae": "average",
    "totla": "total",
    "coutn": "count",
    "cuont": "count",
    "contry": "country",
    "countires": "countries",
    "coutnry": "country",
    "stauts": "status",
    "statsu": "status",
    "shiped": "shipped",
    "catgory": "category",
    "categroy": "category",
    "dupliactes": "duplicates",
    "duplciates": "duplicates",
    "whcih": "which",
    "teh": "the",
    "adn": "and",
    "wiht": "with",
    "frmo": "from",
    "itno": "into",
    "inot": "into",
    "per-": "per",
}

NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
    "hundred": 100,
    "dozen": 12,
}

# Aggregate function words → SQL aggregate.
AGGREGATES = {
    "sum": "sum",
    "total": "sum",
    "totals": "sum",
    "summed": "sum",
    "average": "avg",
    "averages": "avg",
    "avg": "avg",
    "mean": "avg",
    "median": "median",
    "medians": "median",
    "maximum": "max",
    "max": "max",
    "highest": "max",
    "largest": "max",
    "biggest": "max",
    "minimum": "min",
    "min": "min",
    "lowest": "min",
    "smallest": "min",
    "earliest": "min",
    "oldest": "min",
    "first": "min",
    "latest": "max",
    "newest": "max",
    "last": "max",
    "most recent": "max",
}
COUNT_WORDS = {"count", "counts", "number", "how many", "tally", "#", "numbers", "counting", "counted"}
DISTINCT_WORDS = {"distinct", "unique", "different", "separate"}

# Superlatives for ranking: word → (descending?, needs a temporal column?)
RANKING = {
    "top": (True, False),
    "best": (True, False),
    "largest": (True, False),
    "biggest": (True, False),
    "highest": (True, False),
    "greatest": (True, False),
    "most": (True, False),
    "priciest": (True, False),
    "dearest": (True, False),
    "smallest": (False, False),
    "lowest": (False, False),
    "least": (False, False),
    "cheapest": (False, False),
    "poorest": (False, False),
    "busiest": (True, False),  # by number of rows
    "quietest": (False, False),
    "richest": (True, False),
    "wealthiest": (True, False),
    "bottom": (False, False),
    "worst": (False, False),
    "latest": (True, True),
    "newest": (True, True),
    "recent": (True, True),
    "last": (True, True),
    "oldest": (False, True),
    "earliest": (False, True),
    "first": (False, True),
    "longest standing": (False, True),
    "longest serving": (False, True),
    "longest running": (False, True),
}
# Words that say "expensive"/"cheap" refer to a price-like column.
PRICE_WORDS = {
    "expensive",
    "cheapest",
    "cheap",
    "priciest",
    "pricey",
    "costly",
    "cheaper",
    "pricier",
    "dearer",
    "dearest",
}

# Comparison phrases, longest first: phrase → operator (applied as column OP value).
COMPARATORS: list[tuple[str, str]] = [
    ("greater than or equal to", ">="),
    ("less than or equal to", "<="),
    ("more than or equal to", ">="),
    ("no less than", ">="),
    ("not less than", ">="),
    ("no more than", "<="),
    ("not more than", "<="),
    ("not above", "<="),
    ("not over", "<="),
    ("not below", ">="),
    ("not under", ">="),
    ("at least", ">="),
    ("at most", "<="),
    ("up to", "<="),
    ("a minimum of", ">="),
    ("a maximum of", "<="),
    ("more expensive than", ">"),
    ("less expensive than", "<"),
    ("pricier than", ">"),
    ("costlier than", ">"),
    ("greater than", ">"),
    ("bigger than", ">"),
    ("larger than", ">"),
    ("higher than", ">"),
    ("more than", ">"),
    ("over", ">"),
    ("above", ">"),
    ("exceeding", ">"),
    ("beats", ">"),
    ("beat", ">"),
    ("surpasses", ">"),
    ("exceeds", ">"),
    ("exceed", ">"),
    ("beyond", ">"),
    ("less than", "<"),
    ("fewer than", "<"),
    ("smaller than", "<"),
    ("lower than", "<"),
    ("cheaper than", "<"),
    ("under", "<"),
    ("below", "<"),
    ("beneath", "<"),
    ("equal to", "="),
    ("equals", "="),
    ("exactly", "="),
    (">=", ">="),
    ("<=", "<="),
    ("!=", "<>"),
    ("<>", "<>"),
    ("==", "="),
    (">", ">"),
    ("<", "<"),
    ("=", "="),
]
# Trailing forms: "20 or less", "100 or more".
TRAILING_COMPARATORS = {
    ("or", "less"): "<=",
    ("or", "fewer"): "<=",
    ("or", "lower"): "<=",
    ("or", "below"): "<=",
    ("or", "under"): "<=",
    ("or", "more"): ">=",
    ("or", "higher"): ">=",
    ("or", "above"): ">=",
    ("or", "over"): ">=",
    ("or", "greater"): ">=",
    ("and", "up"): ">=",
    ("and", "above"): ">=",
    ("and", "over"): ">=",
    ("and", "below"): "<=",
    ("and", "under"): "<=",
    ("and", "less"): "<=",
    ("plus", ""): ">=",
}

NEGATIONS = {
    "not",
    "no",
    "non",
    "excluding",
    "exclude",
    "excludes",
    "excluded",
    "except",
    "without",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "don't",
    "doesn't",
    "didn't",
    "hasn't",
    "haven't",
    "hadn't",
    "never",
    "other",  # "other than"
    "besides",
    "but",  # "all but cancelled"
    "ignoring",
    "ignore",
    "minus",
    "omit",
    "omitting",
    "skip",
    "skipping",
    "leave",  # "leave out"
    "leaving",
    "filter",  # "filter out"
    "drop",  # "drop the cancelled ones" (rows)
    "dropping",
    "remove",
    "removing",
}

MONTHS = {
    "january": 1,
    "jan": 1,
    "february": 2,
    "feb": 2,
    "march": 3,
    "mar": 3,
    "april": 4,
    "apr": 4,
    "may": 5,
    "june": 6,
    "jun": 6,
    "july": 7,
    "jul": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sep": 9,
    "sept": 9,
    "october": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "december": 12,
    "dec": 12,
}
# Calendar units for grouping and buckets.
UNITS = {
    "hour": "hour",
    "hours": "hour",
    "hourly": "hour",
    "day": "day",
    "days": "day",
    "daily": "day",
    "date": "day",
    "week": "week",
    "weeks": "week",
    "weekly": "week",
    "month": "month",
    "months": "month",
    "monthly": "month",
    "quarter": "quarter",
    "quarters": "quarter",
    "quarterly": "quarter",
    "year": "year",
    "years": "year",
    "yearly": "year",
    "annual": "year",
    "annually": "year",
    "weekday": "weekday",
    "weekdays": "weekday",
}


def words(text: str) -> frozenset[str]:
    """A set of words written as one block of text."""
    return frozenset(text.split())


# Words that carry no meaning of their own in a request (beyond what the parser reads from
# structure). An unconsumed word in this list is not reported as unused.
FILLERS = words(
    """
    a an the of and or with from into to in on by for all only rows row table tables file files data
    dataset records record entries entry lines line items item values value please kindly can could
    would you i we me us our my your it its them they their this that these those there here is are
    was were be been being do does did have has had get gets got give giving show showing list
    listing want need like just also then so as at which what whose who whom where when each every
    any some one ones new fresh result results output final version copy load loading loaded import
    importing imported bring put place save saving saved store storing stored write writing written
    create creating build building make making produce producing generate generating compute
    computing calculate calculating work out figure find keep keeping kept include including
    included contain containing called named name call let's lets let warehouse database db schema
    csv parquet json ndjson sqlite source sources using use via through take taking read reading
    pull pulling over across along together both too very really quickly thanks thank hey hi okay ok
    should must might may will shall go goes went now today help column columns field fields
    attribute attributes info information details detail set sets wanted wants report summary
    summarize summarized summarizing overview breakdown per whole entire complete full everything
    anything rest remainder remaining others i'd i'm we'd answer answers dated thing things stuff
    existing current already end onto untouched unchanged intact
    """
)
