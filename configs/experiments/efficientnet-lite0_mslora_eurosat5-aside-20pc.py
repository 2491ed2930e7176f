# EuroSAT-5 with 20 training images a class (PerClassSubset seed 0), scored
# on the held-aside test split and the old one (the -aside config):
# 24 epochs of batch 32, 96 iterations as at every size of the sweep.
_base_ = './efficientnet-lite0_mslora_eurosat5-aside.py'

train_dataloader = dict(dataset=dict(per_class=20))
train_cfg = dict(max_epochs=24, val_interval=24)
