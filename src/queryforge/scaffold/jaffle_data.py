"""The jaffle_shop-shaped raw data of `queryforge init --example jaffle`: customers, orders, payments.

Generated from a fixed seed (the same files on every machine), in the shape of dbt's example
project: 100 customers, 99 orders, 113 payments in cents, some customers without an order and
some orders paid in two parts.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

SEED = 20180101
FIRST = (
    "Michael",
    "Shawn",
    "Kathleen",
    "Jimmy",
    "Katherine",
    "Sarah",
    "Martin",
    "Frank",
    "Jennifer",
    "Henry",
    "Fred",
    "Amy",
    "Kathleen",
    "Steve",
    "Teresa",
    "Amanda",
    "Kimberly",
    "Johnny",
    "Virginia",
    "Anna",
)
STATUSES = ("completed",) * 6 + ("shipped", "placed", "return_pending", "returned")
METHODS = ("credit_card",) * 4 + ("coupon", "bank_transfer", "bank_transfer", "gift_card")


def write_jaffle_data(folder: Path) -> None:
    rng = random.Random(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    ids = list(range(1, 101))
    customers = pa.table(
        {
            "id": ids,
            "first_name": [rng.choice(FIRST) for _ in ids],
            "last_name": [f"{chr(ord('A') + rng.randrange(26))}." for _ in ids],
        }
    )
    order_ids = list(range(1, 100))
    start = date(2018, 1, 1)
    orders = pa.table(
        {
            "id": order_ids,
            "user_id": [rng.randint(1, 100) for _ in order_ids],
            "order_date": [start + timedelta(days=(i * 97) // 99) for i in order_ids],
            "status": [rng.choice(STATUSES) for _ in order_ids],
        }
    )
    paid = order_ids + [rng.choice(order_ids) for _ in range(14)]  # 14 orders paid in two parts
    payments = pa.table(
        {
            "id": list(range(1, len(paid) + 1)),
            "order_id": paid,
            "payment_method": [rng.choice(METHODS) for _ in paid],
            "amount": [
                rng.choice((0, rng.randint(100, 3000))) if i % 9 == 0 else rng.randint(100, 3000)
                for i in range(len(paid))
            ],
        }
    )
    for name, table in (("raw_customers", customers), ("raw_orders", orders), ("raw_payments", payments)):
        pacsv.write_csv(table, folder / f"{name}.csv")
