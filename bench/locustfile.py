"""Locust traffic for the `orders` service through meshproxy (`make loadtest` runs it).

An `OrdersClient` is one app talking to its sidecar: it lists orders, reads single orders, places
small orders (POST with a JSON body), and sends a share of its reads on the beta channel
(`x-channel: beta`, routed to orders-v2). Requests are named by route shape, not by URL, so
locust's stats group `/orders/1234` with every other order read.

Each user sends `--user-rps` requests a second (default 10; 0 = as fast as it can), so the
offered load is users × user-rps. Stand-alone:

    locust -f bench/locustfile.py --host http://127.0.0.1:15001 --headless -u 50 -r 10 -t 30s
"""

from __future__ import annotations

import json
import random
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--user-rps", type=float, default=10.0, help="requests a second per user; 0 = no pause"
    )


class OrdersClient(FastHttpUser):
    # The routes match on the `orders` service name, whatever address the proxy listens on.
    default_headers = {"Host": "orders"}  # noqa: RUF012 (locust reads it off the class)

    def wait_time(self) -> float:
        rate: float = (
            self.environment.parsed_options.user_rps if self.environment.parsed_options else 10.0
        )
        return constant_throughput(rate)(self) if rate > 0 else 0.0

    @task(50)
    def list_orders(self) -> None:
        self.client.get("/orders", name="/orders")

    @task(30)
    def read_order(self) -> None:
        self.client.get(f"/orders/{random.randint(1, 100_000)}", name="/orders/[id]")

    @task(10)
    def place_order(self) -> None:
        body = json.dumps(
            {"item": f"sku-{random.randint(1, 500)}", "quantity": random.randint(1, 5)}
        ).encode()
        with self.client.post(
            "/orders",
            data=body,
            headers={"Content-Type": "application/json"},
            name="/orders",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"expected 201, got {response.status_code}")
            elif response.json().get("received") != len(body):
                response.failure(
                    f"the upstream received {response.json().get('received')} of {len(body)} body bytes"
                )

    @task(10)
    def list_orders_beta(self) -> None:
        with self.client.get(
            "/orders",
            headers={"x-channel": "beta"},
            name="/orders (x-channel: beta)",
            catch_response=True,
        ) as response:
            if response.status_code == 200 and response.headers.get("x-upstream") != "v2":
                response.failure(
                    f"x-channel: beta answered by {response.headers.get('x-upstream')}, not v2"
                )
