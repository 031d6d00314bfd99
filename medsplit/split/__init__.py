"""Split learning: cut a stage table into parts, give parts to parties, move tensors
between parties through a byte-counting Channel (``channel.py``), which consults a CrossingPlan
(``crossings.py``: what may cross which link) and adds to a ByteLedger (``byte_ledger.py``: the
counts a run reports and checkpoints). ``transfer.py``: the transfer kinds and what observers see."""

from medsplit.split.channel import Channel
from medsplit.split.transfer import Transfer
from medsplit.split.cut import Part, cut
from medsplit.split.split_model import SplitModel, two_party
from medsplit.split.party import Party

__all__ = ["Channel", "Transfer", "Part", "cut", "SplitModel", "Party", "two_party"]
