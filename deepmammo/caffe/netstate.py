"""Which layers a net holds in a given state, and the Split layers Caffe adds.

filter_net: Caffe's FilterNet/StateMeetsRule (include/exclude NetStateRules by phase,
min_level/max_level, stage and not_stage). insert_splits: Caffe's InsertSplits, with its
names (`<blob>_<layer>_<i>_split` layers, `..._split_<k>` blobs), so blob and layer lists match
real pycaffe's.
"""
from deepmammo.caffe.proto import caffe_pb2 as pb


class NetError(ValueError):
    """A net that cannot be built: names the layer (and the file when known)."""


def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer, state, source="<net>"):
    if len(layer.include) and len(layer.exclude):
        raise NetError(f"{source}: layer {layer.name!r} has both include and exclude rules; "
                       "specify one kind only")
    if len(layer.include):
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def filter_net(net, state, source="<net>"):
    """A copy of NetParameter `net` holding only the layers included in NetState `state`."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.layer.extend(l for l in net.layer if layer_included(l, state, source))
    return out


def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(net, source="<net>"):
    """A copy of `net` where every top read by more than one bottom (a loss use counts as a
    read) feeds a Split layer whose tops go one to each reader."""
    last_top = {}             # blob name -> (layer index, top index) that last wrote it
    bottom_source = {}        # (layer, bottom) -> (layer, top)
    readers = {}              # (layer, top) -> number of reads
    loss_weight = {}
    for i, layer in enumerate(net.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError(f"{source}: unknown bottom blob {name!r} (layer {layer.name!r}, "
                               f"bottom index {j})")
            src = last_top[name]
            bottom_source[(i, j)] = src
            readers[src] = readers.get(src, 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            src = last_top[layer.top[j]]
            loss_weight[src] = layer.loss_weight[j]
            if loss_weight[src]:
                readers[src] = readers.get(src, 0) + 1
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    next_split = {}
    for i, layer in enumerate(net.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for j in range(len(new.bottom)):
            src = bottom_source[(i, j)]
            if readers.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                new.bottom[j] = split_blob_name(net.layer[src[0]].name, new.bottom[j], src[1], k)
        for j, name in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = out.layer.add(name=split_layer_name(layer.name, name, j), type="Split")
            split.bottom.append(name)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                new.ClearField("loss_weight")
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out


def data_layers(net, phase):
    """The Data layers of NetParameter `net` in `phase` (pb.TRAIN or pb.TEST) at level 0 with
    no stages, by Caffe's rule: a layer without include/exclude rules is in both phases."""
    state = pb.NetState(phase=phase)
    return [layer for layer in net.layer
            if layer.type == "Data" and layer_included(layer, state)]
