"""Training data: climbmix-layout shards, the BPE tokenizer, the packing loader, val_bpb."""

from stagewise.data.prepare import prepare

__all__ = ["prepare"]
