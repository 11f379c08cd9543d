"""The S small networks of a candidate as one module, run either packed or one after another.

Divide-and-co-train trains S networks of one architecture side by side; every member sees its
own augmented view of the batch.  :class:`Ensemble` is what the training loop sees:
``views [S, B, C, H, W] -> logits [S, B, K]``, whichever way the members run.

* :class:`SequentialEnsemble` runs the members one after another, as the authors' code does.
  On a GPU each small network launches small kernels that leave most of the device idle; that
  is why the paper reports co-training as slower than training the one large network.
* :class:`FusedEnsemble` packs the members into ONE network whose every layer holds all S
  members side by side: a convolution with ``groups = S * g``, a BatchNorm over ``S * C``
  channels, a batched linear layer.  One kernel per layer does the work of S, which keeps an
  accelerator busy; the numbers are the same as running the members apart (``nn.Dropout``
  draws other masks, from the same distribution).  On a small CPU the members already keep the
  cores busy and grouped convolutions run slower than dense ones, so there packing does not
  pay (``benchmarks/cotrain_step.py`` measures both).

Layout of the packed network: ``[B, S * C, H, W]``, member s owning channels
``[s * C, (s + 1) * C)`` of every layer.  Packing replaces modules generically, so it is only
right for networks whose forward never mixes channels of different members (no ``torch.cat`` on
the channel axis, no reshape with a stored channel count, no per-sample random draws shared by
the members); :func:`pack` traces the forward with ``torch.fx`` and refuses what it cannot
prove harmless, and :data:`NOT_FUSABLE_ARCH_PREFIXES` lists the zoo's families that fail.
"""

from __future__ import annotations

import copy
import operator
import warnings
from typing import Literal, Mapping, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig, ensemble_mode
from splitsearch.errors import SplitsearchError

EnsembleMode = Literal["auto", "fused", "sequential"]

class FusionError(SplitsearchError, ValueError):
    """The members cannot be packed into one network (``--mode fused``); the message says what is in the way."""
StateDict = Mapping[str, torch.Tensor]

# Families of the zoo that do not fuse.  Checked by forcing the pack past check_packable and
# comparing with the members run apart: DenseNet and Shake-Shake give other logits even in eval
# mode, PyramidNet fails on a shape mismatch at the first padded shortcut, EfficientNet matches
# in eval mode but not in training (drop-path).  check_packable refuses all four on its own
# (tests/test_ensemble.py).  The reasons name what a model would have to change to fuse.
NOT_FUSABLE_ARCH_PREFIXES: dict[str, str] = {
    "densenet": "every dense layer appends its features with torch.cat(dim=1), which would put all "
                "members' new features after all members' inputs instead of inside each member",
    "pyramidnet": "the shortcut appends zero channels with F.pad on the channel axis (after the last "
                  "member, not after each), and ShakeDrop draws one gate per sample that all members "
                  "would share",
    "shake_shake": "the down-sampling shortcut joins two convolutions with torch.cat(dim=1), interleaving "
                   "members, and the per-sample shake coefficients would be shared by all members",
    "efficientnet": "drop-path draws one keep/drop decision per sample, so packed it would drop the "
                    "residual branch of all members together instead of independently",
}


def fusion_blocker(arch: str) -> str | None:
    """Why the members of ``arch`` cannot be packed, or ``None`` where they can."""
    for prefix, reason in NOT_FUSABLE_ARCH_PREFIXES.items():
        if arch.startswith(prefix):
            return reason
    return None


def can_fuse(arch: str) -> bool:
    """Whether :func:`pack` gives the same numbers as running the members of ``arch`` apart."""
    return fusion_blocker(arch) is None


# -- the two ways to run S networks ---------------------------------------------------------------


class Ensemble(nn.Module):
    """S networks of one architecture; member s sees ``views[s]``, its own augmented view.

    Subclasses differ only in how the members run; the logits are the same.
    """

    def __init__(self, num_members: int) -> None:
        super().__init__()
        self.num_members = num_members

    @property
    def members(self) -> list[nn.Module]:
        """The S networks as ordinary modules (deployable one by one)."""
        raise NotImplementedError

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """``views [S, B, C, H, W] -> logits [S, B, num_classes]``."""
        if views.dim() != 5 or views.shape[0] != self.num_members:
            raise ValueError(
                f"expected views of shape [S={self.num_members}, B, C, H, W], got {list(views.shape)}"
            )
        return self._run(views)

    def _run(self, views: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SequentialEnsemble(Ensemble):
    """The members in an ``nn.ModuleList``, run one after another (the authors' way).

    Works for every architecture; use it where packing is not possible, or to compare.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__(len(networks))
        self.networks = nn.ModuleList(networks)

    @property
    def members(self) -> list[nn.Module]:
        """The live member networks (training them trains the ensemble)."""
        return list(self.networks)

    def _run(self, views: torch.Tensor) -> torch.Tensor:
        return torch.stack([network(view) for network, view in zip(self.networks, views)])


class PackedLinear(nn.Module):
    """S independent linear layers in one batched matmul.

    Input ``[B, S * in_features]`` (member s in the s-th slice, as a packed network's flattened
    features are laid out), output ``[B, S * out_features]``.  ``weight`` is ``[S, out, in]``,
    ``bias`` ``[S, out]``: ``weight[s]`` is member s's ``nn.Linear.weight``.
    """

    # Weight decay is chosen by layer type (splitsearch.train.optim); this says "a linear layer".
    decay_weight = True

    def __init__(self, num_members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_members, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"PackedLinear takes [B, S * in_features] inputs, got shape {list(x.shape)}")
        batch = x.shape[0]
        per_member = x.view(batch, self.num_members, self.in_features).transpose(0, 1)
        weight = self.weight.transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(per_member, weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), per_member, weight)
        return out.transpose(0, 1).reshape(batch, self.num_members * self.out_features)

    def extra_repr(self) -> str:
        return (f"num_members={self.num_members}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class FusedEnsemble(Ensemble):
    """The members packed into one network (see the module docstring); build it with :func:`pack`.

    Attributes:
        network: the packed network, ``[B, S * C, H, W] -> [B, S * K]``.
        template: one member's architecture on the meta device, from which :func:`unpack`
            rebuilds the members.  It is kept out of the module tree, so it adds no parameters,
            no state-dict keys and is not moved by ``.to()``.
    """

    def __init__(self, network: nn.Module, template: nn.Module, num_members: int) -> None:
        super().__init__(num_members)
        self.network = network
        self.__dict__["template"] = template

    @property
    def members(self) -> list[nn.Module]:
        """Copies of the members (:func:`unpack`): changing them does not change the ensemble."""
        return unpack(self)

    def _run(self, views: torch.Tensor) -> torch.Tensor:
        S, batch, channels, height, width = views.shape
        packed = views.transpose(0, 1).reshape(batch, S * channels, height, width)
        logits = self.network(packed)
        return logits.reshape(batch, S, -1).transpose(0, 1)


# -- packing ----------------------------------------------------------------------------------------

_PACKABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Parameter-free torch.nn layers that act on each channel (or each element) alone.
_PER_CHANNEL_LAYERS = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.MaxPool2d,
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d,
    nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
)
# Functions and tensor methods a forward may call between layers: elementwise or per channel.
_PER_CHANNEL_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.sigmoid, torch.tanh, torch.relu,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.dropout, F.dropout2d, F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.interpolate,
}
_PER_CHANNEL_METHODS = {
    "add", "add_", "sub", "mul", "mul_", "div", "sigmoid", "sigmoid_", "relu", "relu_", "tanh",
    "clamp", "contiguous", "clone", "size", "dim", "to", "float", "type_as",
}
_WHY_NOT = {
    "cat": "joins tensors along the channel axis, which interleaves the members",
    "concat": "joins tensors along the channel axis, which interleaves the members",
    "stack": "stacks tensors, which interleaves the members",
    "chunk": "splits channels by one member's count", "split": "splits channels by one member's count",
    "view": "reshapes with a stored shape (one member's channel count)",
    "reshape": "reshapes with a stored shape (one member's channel count)",
    "rand": "draws per-sample random numbers, which all members would share",
    "rand_like": "draws random numbers, which all members would share",
    "randn": "draws per-sample random numbers, which all members would share",
    "bernoulli": "draws random numbers, which all members would share",
    "pad": "pads the channel axis, after the last member instead of after each",
}
_UNKNOWN_OPERATION = "is not known to act on each member's channels alone"


def pack(networks: Sequence[nn.Module]) -> FusedEnsemble:
    """Pack S networks of identical architecture into one :class:`FusedEnsemble`.

    Conv2d(in, out, groups=g) becomes Conv2d(S*in, S*out, groups=S*g) with the members' weights
    concatenated on dim 0; BatchNorm2d(C) becomes BatchNorm2d(S*C) (parameters and running
    statistics concatenated, ``num_batches_tracked`` from member 0); Linear becomes
    :class:`PackedLinear`; parameter-free per-channel layers stay.  The members are not changed.

    Raises:
        ValueError: no networks, networks of different architectures, or a module or operation
            that would mix the members' channels (the message names it).
    """
    networks = list(networks)
    if not networks:
        raise ValueError("pack needs at least one network")
    _check_same_architecture(networks)
    template = copy.deepcopy(networks[0]).to("meta")
    check_packable(template)
    with torch.device("meta"):
        network = _replace_layers(copy.deepcopy(template), len(networks), {})
    network.load_state_dict(pack_state_dicts([member.state_dict() for member in networks], template), assign=True)
    return FusedEnsemble(network, template, len(networks))


def unpack(fused: FusedEnsemble) -> list[nn.Module]:
    """The S members of ``fused`` as ordinary networks, for deployment one by one.

    Each gets its own copy of its slices (on the packed network's device and dtype) and the
    ensemble's train/eval mode.
    """
    members = []
    for state in unpack_state_dict(fused.network.state_dict(), fused.template, fused.num_members):
        member = copy.deepcopy(fused.template)
        member.load_state_dict(state, assign=True)
        members.append(member.train(fused.training))
    return members


def pack_state_dicts(state_dicts: Sequence[StateDict], template: nn.Module) -> dict[str, torch.Tensor]:
    """The packed network's state dict from the S members' state dicts.

    ``template`` is one member (any device, ``meta`` included): it says which layer owns a key.
    """
    owners = _owner_types(template)
    packed = {}
    for key in state_dicts[0]:
        tensors = [state[key] for state in state_dicts]
        kind, name = _owner(key, owners)
        if name == "num_batches_tracked":
            packed[key] = tensors[0].clone()
        elif kind is nn.Linear:
            packed[key] = torch.stack(tensors)
        else:
            packed[key] = torch.cat(tensors)
    return packed


def unpack_state_dict(state_dict: StateDict, template: nn.Module, num_members: int) -> list[dict[str, torch.Tensor]]:
    """The S members' state dicts from a packed network's state dict (the inverse of
    :func:`pack_state_dicts`).  Works for any mapping keyed like it, e.g. of gradients."""
    owners = _owner_types(template)
    states: list[dict[str, torch.Tensor]] = [{} for _ in range(num_members)]
    for key, tensor in state_dict.items():
        kind, name = _owner(key, owners)
        for index, state in enumerate(states):
            if name == "num_batches_tracked":
                state[key] = tensor.clone()
            elif kind is nn.Linear:
                state[key] = tensor[index].clone()
            else:
                state[key] = tensor.chunk(num_members)[index].clone()
    return states


def check_packable(network: nn.Module) -> None:
    """Raise ``ValueError`` unless packing ``network``'s architecture keeps every member apart.

    Two checks: every layer holding parameters or buffers is one :func:`pack` converts, and
    the forward (traced with ``torch.fx`` in train and eval mode) calls only operations that act
    on each channel alone.  Layers from ``torch.nn`` are checked by type, not traced.
    """
    name_of = type(network).__name__
    for name, module in network.named_modules():
        if type(module) in _PACKABLE:
            continue
        where = f"{name or name_of} ({type(module).__name__})"
        if [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            raise FusionError(f"cannot pack {where}: only Conv2d, BatchNorm2d and Linear layers "
                              f"hold parameters or buffers that pack converts")
        torch_layer = module.__module__.startswith("torch.") and not isinstance(module, _CONTAINERS)
        if torch_layer and not _per_channel_layer(module):
            raise FusionError(f"cannot pack {where}: it is not known to act on each member's channels alone")
    modes = {module: module.training for module in network.modules()}
    try:
        for training in (True, False):
            network.train(training)
            _check_traced_forward(network)
    finally:
        for module, training in modes.items():
            module.training = training


def _per_channel_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.Flatten):
        return module.start_dim == 1 and module.end_dim == -1
    return isinstance(module, _PER_CHANNEL_LAYERS)


def _check_traced_forward(network: nn.Module) -> None:
    try:
        graph = torch.fx.Tracer().trace(network)
    except Exception as error:  # any tracing failure means: cannot prove the members stay apart
        raise FusionError(f"cannot pack {type(network).__name__}: its forward cannot be traced with torch.fx "
                          f"to check that members stay apart ({type(error).__name__}: {error})") from None
    for node in graph.nodes:
        if node.op in ("call_function", "call_method") and not _per_channel_call(node):
            name = node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
            path, owner = next(reversed(node.meta.get("nn_module_stack", {}).values()), ("", network.__class__))
            mode = "training" if network.training else "evaluation"
            raise FusionError(
                f"cannot pack {type(network).__name__}: {path or 'forward'} ({owner.__name__}) calls {name} in "
                f"{mode}, which {_WHY_NOT.get(name, _UNKNOWN_OPERATION)}"
            )


def _per_channel_call(node: torch.fx.Node) -> bool:
    if node.op == "call_method" and node.target in ("view", "reshape"):
        # x.view(x.size(0), -1): flattens [B, S*C, H, W] with each member's values still contiguous.
        return len(node.args) == 3 and _is_batch_size(node.args[1]) and node.args[2] == -1
    if node.op == "call_method":
        return node.target in _PER_CHANNEL_METHODS
    if node.target is F.pad:
        pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
        return len(pad) <= 4  # (left, right, top, bottom): spatial only
    if node.target is operator.getitem:
        return _per_channel_index(node)
    if node.target is getattr:
        return node.args[1] in ("shape", "device", "dtype")
    if node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return node.target in _PER_CHANNEL_FUNCTIONS


def _per_channel_index(node: torch.fx.Node) -> bool:
    """``x[:, :, a:b, c:d]`` (every channel kept) or an index into a shape."""
    source, index = node.args
    if _is_shape(source):
        return True
    return (isinstance(index, tuple) and len(index) >= 2 and index[:2] == (slice(None), slice(None))
            and all(isinstance(item, slice) for item in index))


def _is_batch_size(node: object) -> bool:
    """Whether ``node`` is ``x.size(0)`` or ``x.shape[0]``."""
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_method" and node.target == "size":
        return node.args[1:] == (0,)
    return node.target is operator.getitem and node.args[1] == 0 and _is_shape(node.args[0])


def _is_shape(node: object) -> bool:
    """Whether ``node`` is ``x.shape`` / ``x.size()`` or a part of one (``x.shape[:2]``, ``b, c = ...``)."""
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_method":
        return node.target == "size"
    if node.target is getattr:
        return node.args[1] == "shape"
    return node.target is operator.getitem and _is_shape(node.args[0])


def _check_same_architecture(networks: list[nn.Module]) -> None:
    def signature(network: nn.Module) -> list[tuple]:
        layers = [(name, type(module), module.extra_repr()) for name, module in network.named_modules()]
        shapes = [(key, tuple(value.shape), value.dtype) for key, value in network.state_dict().items()]
        return layers + shapes

    first = signature(networks[0])
    for index, network in enumerate(networks[1:], start=1):
        if signature(network) != first:
            raise ValueError(f"cannot pack networks of different architectures: member {index} differs from member 0")


def _replace_layers(module: nn.Module, num_members: int, memo: dict[int, nn.Module]) -> nn.Module:
    """Replace every packable layer below ``module`` by its packed form (in place).

    ``memo`` makes a layer reachable under two names (e.g. ``bn2`` and ``last_bn``) one packed
    layer under both.
    """
    if id(module) in memo:
        return memo[id(module)]
    packed = _packed_layer(module, num_members)
    if packed is None:
        for name, child in module._modules.items():
            if child is not None:
                module._modules[name] = _replace_layers(child, num_members, memo)
        packed = module
    memo[id(module)] = packed
    return packed


def _packed_layer(module: nn.Module, S: int) -> nn.Module | None:
    """An empty packed version of a Conv2d, BatchNorm2d or Linear; ``None`` for anything else."""
    if type(module) is nn.Conv2d:
        packed: nn.Module = nn.Conv2d(
            S * module.in_channels, S * module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, groups=S * module.groups, bias=module.bias is not None, padding_mode=module.padding_mode,
        )
    elif type(module) is nn.BatchNorm2d:
        packed = nn.BatchNorm2d(S * module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
    elif type(module) is nn.Linear:
        packed = PackedLinear(S, module.in_features, module.out_features, bias=module.bias is not None)
    else:
        return None
    return packed.train(module.training)


def _owner_types(template: nn.Module) -> dict[str, type]:
    return {name: type(module) for name, module in template.named_modules(remove_duplicate=False)}


def _owner(key: str, owners: dict[str, type]) -> tuple[type, str]:
    """(type of the layer that holds state-dict entry ``key``, the entry's name in that layer)."""
    path, _, name = key.rpartition(".")
    kind = owners.get(path)
    if kind not in _PACKABLE:
        raise ValueError(f"state-dict entry {key!r} belongs to {getattr(kind, '__name__', 'no layer')}, "
                         f"which pack does not convert")
    return kind, name


# -- from a config ----------------------------------------------------------------------------------


def make_ensemble(config: SplitConfig, mode: str = "auto",
                  device: torch.device | str | None = None, members: slice = slice(None)) -> Ensemble:
    """The S networks of ``config`` (fresh initialisations), or a slice of them, as one :class:`Ensemble`.

    ``mode="auto"`` packs on an accelerator where :func:`can_fuse` allows it and :func:`pack`
    agrees, and otherwise warns and runs the members one after another; on the CPU it runs them
    one after another, which measured faster there (``benchmarks/cotrain_step.py``).
    ``"fused"`` packs or raises; ``"sequential"`` never packs.  With one member there is nothing
    to pack.  All S are built, in order, whatever ``members`` keeps, so a member's initial
    weights do not depend on which process builds it (member-parallel training).  A compiled
    mode holds the members as its eager one does (:func:`ensemble_mode`).
    """
    mode = ensemble_mode(mode)
    networks = build_networks(config, device=device)[members]
    on_cpu = device is None or torch.device(device).type == "cpu"
    if mode == "sequential" or (mode == "auto" and (len(networks) == 1 or on_cpu)):
        return SequentialEnsemble(networks)
    blocker = fusion_blocker(config.arch)
    if blocker is None:
        try:
            return pack(networks)
        except ValueError as error:
            if mode == "fused":
                raise
            blocker = str(error)
    if mode == "fused":
        raise FusionError(f"{config.arch} cannot be fused: {blocker}")
    warnings.warn(f"{config.arch}: running the {config.S} networks one after another, not fused: {blocker}",
                  stacklevel=2)
    return SequentialEnsemble(networks)


def combine_logits(logits: Tensor, rule: str = "mean_logits") -> Tensor:
    """Ensemble prediction [B, K] from member logits [S, B, K].

    ``mean_logits`` (the paper's choice, Appendix C), ``max_logits`` or ``mean_softmax``
    (returned as log-probabilities so argmax and cross-entropy still apply).
    """
    if rule == "mean_logits":
        return logits.mean(0)
    if rule == "max_logits":
        return logits.max(0).values
    if rule == "mean_softmax":
        return logits.softmax(-1).mean(0).clamp_min(1e-12).log()
    raise ValueError(f"unknown combine rule {rule!r}: use mean_logits, max_logits or mean_softmax")
