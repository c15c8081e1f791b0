"""A tiny stock ledger: an example corpus for the code-retrieval probe."""

from __future__ import annotations


class Ledger:
    """Quantities of items in a store room, with a history of every change."""

    def __init__(self) -> None:
        """An empty ledger."""
        self.stock: dict[str, int] = {}
        self.history: list[tuple[str, int]] = []

    def receive_goods(self, item: str, quantity: int) -> None:
        """Add ``quantity`` units of ``item`` delivered to the store room."""
        if quantity <= 0:
            raise ValueError("a delivery must bring at least one unit")
        self.stock[item] = self.stock.get(item, 0) + quantity
        self.history.append((item, quantity))

    def dispatch_order(self, item: str, quantity: int) -> bool:
        """Take ``quantity`` units of ``item`` out; False when too few are left."""
        available = self.stock.get(item, 0)
        if available < quantity:
            return False
        self.stock[item] = available - quantity
        self.history.append((item, -quantity))
        return True

    def low_stock_items(self, threshold: int) -> list[str]:
        """Items with fewer than ``threshold`` units, in name order."""
        scarce = [name for name, count in self.stock.items() if count < threshold]
        return sorted(scarce)


def reorder_quantity(on_hand: int, weekly_use: int, lead_weeks: int) -> int:
    """Units to order so that stock lasts through the supplier's lead time plus a week."""
    needed = weekly_use * (lead_weeks + 1)
    return max(needed - on_hand, 0)


def total_stock_value(stock: dict[str, int], prices: dict[str, float]) -> float:
    """Value of ``stock`` at ``prices``; an item with no price counts as free."""
    running_total = 0.0
    for item, count in stock.items():
        running_total += count * prices.get(item, 0.0)
    return round(running_total, 2)
