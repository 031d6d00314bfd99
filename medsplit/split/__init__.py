"""Split learning: cut a stage table into parts, give parts to parties, move tensors
between parties through a byte-counting Channel."""

from medsplit.split.channel import Channel, Transfer
from medsplit.split.cut import Part, cut
from medsplit.split.split_model import SplitModel, two_party
from medsplit.split.party import Party

__all__ = ["Channel", "Transfer", "Part", "cut", "SplitModel", "Party", "two_party"]
