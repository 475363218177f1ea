"""A synthetic equipment fleet: sensor graphs and a seeded sensor-reading simulator.

Each equipment *type* (pump, compressor, motor, ...) is a small graph: the nodes
are its sensors, each with a kind, a nominal mean and standard deviation and a
coupling to the machine's load; the edges follow the mechanical and process
topology (a motor's vibration couples to the pump's vibration, suction pressure
to flow, ...). Each type also lists its *fault modes*, each a set of per-sensor
effects (a mean shift and a slope in nominal standard deviations, a noise
factor).

:meth:`EquipmentFleet.simulate` produces one window of readings per sensor.
In standardised units (``z = (x - nominal_mean) / nominal_std``) a reading is::

    z = offset + coupling * load + noise_factor * N(0, 1)      # healthy
        + severity * (fault mean shift + fault slope * ramp)   # when faulty
        + drift * drift_direction                              # input drift

with ``load ~ N(0, 0.4)`` per window, a fixed per-equipment ``offset`` (how the
unit was installed) and ``ramp`` going from -1 to 1 across the window. The
``drift`` knob models ageing sensors and a changed operating regime: every
sensor shifts by ``drift`` nominal standard deviations in its kind's direction
(temperatures and vibration read higher, pressures and flows lower) and gets
``1 + 0.5 * drift`` times noisier, so a model's score distribution moves
away from the one it was built on.

All randomness comes from the caller's :class:`numpy.random.Generator`, so the
same seed gives the same readings. Everything is vectorised over a batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

__all__ = [
    "EQUIPMENT_TYPES",
    "SENSOR_KINDS",
    "WINDOW",
    "Equipment",
    "EquipmentFleet",
    "EquipmentType",
    "FaultEffect",
    "SensorReadings",
    "SensorSpec",
    "UnknownEquipmentError",
    "simulate_values",
]

FloatArray = npt.NDArray[np.float64]

#: Samples per sensor in one reading window.
WINDOW: Final = 32

#: Sensor kinds, in the order of the GNN's one-hot node-kind features.
SENSOR_KINDS: Final = ("vibration", "temperature", "pressure", "flow", "current", "speed", "position")

# Direction in which input drift moves each kind of sensor (in nominal standard deviations).
_DRIFT_DIRECTION: Final[Mapping[str, float]] = MappingProxyType(
    {
        "vibration": 1.0,
        "temperature": 1.0,
        "pressure": -1.0,
        "flow": -1.0,
        "current": 1.0,
        "speed": -0.5,
        "position": 0.5,
    }
)
_LOAD_STD: Final = 0.4
_OFFSET_STD: Final = 0.25
_SEVERITY_RANGE: Final = (0.6, 1.4)


class UnknownEquipmentError(LookupError):
    """An equipment id that is not in the fleet."""

    def __init__(self, equipment_id: str, example: str) -> None:
        super().__init__(f"equipment_id must be an id of the fleet (e.g. {example!r}), got {equipment_id!r}")
        self.equipment_id = equipment_id


def _readonly(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


@attrs.frozen
class SensorSpec:
    """One sensor (a graph node): its kind, nominal operating point and load coupling."""

    name: str
    kind: str = attrs.field()
    unit: str
    nominal_mean: float
    nominal_std: float = attrs.field()
    load_coupling: float = 0.0

    @kind.validator
    def _check_kind(self, _: attrs.Attribute[str], value: str) -> None:
        if value not in SENSOR_KINDS:
            raise ValueError(f"kind must be one of {SENSOR_KINDS}, got {value!r}")

    @nominal_std.validator
    def _check_std(self, _: attrs.Attribute[float], value: float) -> None:
        if not value > 0:
            raise ValueError(f"nominal_std must be > 0, got {value!r}")


@attrs.frozen
class FaultEffect:
    """How a fault changes one sensor, in nominal standard deviations."""

    mean_shift: float = 0.0
    noise_factor: float = 1.0
    slope: float = 0.0


@attrs.frozen
class EquipmentType:
    """A kind of equipment: its sensor graph and fault modes.

    ``adjacency`` is the symmetric 0/1 adjacency matrix of the sensor graph (no
    self loops), ordered like ``sensors``.
    """

    name: str
    prefix: str
    sensors: tuple[SensorSpec, ...]
    edges: tuple[tuple[str, str], ...]
    faults: Mapping[str, Mapping[str, FaultEffect]]
    adjacency: FloatArray = attrs.field(init=False, eq=False, repr=False)
    _nominal: FloatArray = attrs.field(init=False, eq=False, repr=False)
    _coupling: FloatArray = attrs.field(init=False, eq=False, repr=False)
    _drift_direction: FloatArray = attrs.field(init=False, eq=False, repr=False)
    _fault_tables: FloatArray = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        index = {s.name: i for i, s in enumerate(self.sensors)}
        if len(index) != len(self.sensors):
            raise ValueError(f"sensors of {self.name!r} must have unique names, got {list(index)}")
        adjacency = np.zeros((len(index), len(index)))
        for a, b in self.edges:
            for end in (a, b):
                if end not in index:
                    raise ValueError(f"edge ends of {self.name!r} must be sensor names, got {end!r}")
            adjacency[index[a], index[b]] = adjacency[index[b], index[a]] = 1.0
        # One (mean_shift, noise_factor, slope) table per fault, shape (n_faults, 3, n_sensors).
        tables = np.zeros((len(self.faults), 3, len(index)))
        tables[:, 1, :] = 1.0
        for f, effects in enumerate(self.faults.values()):
            for sensor, effect in effects.items():
                if sensor not in index:
                    raise ValueError(f"fault effects of {self.name!r} must name sensors, got {sensor!r}")
                tables[f, :, index[sensor]] = (effect.mean_shift, effect.noise_factor, effect.slope)
        setattr_ = object.__setattr__  # attrs.frozen: derived fields are set once, here
        setattr_(self, "adjacency", _readonly(adjacency))
        setattr_(
            self,
            "_nominal",
            _readonly(np.array([[s.nominal_mean for s in self.sensors], [s.nominal_std for s in self.sensors]])),
        )
        setattr_(self, "_coupling", _readonly(np.array([s.load_coupling for s in self.sensors])))
        setattr_(
            self, "_drift_direction", _readonly(np.array([_DRIFT_DIRECTION[s.kind] for s in self.sensors]))
        )
        setattr_(self, "_fault_tables", _readonly(tables))

    @property
    def sensor_names(self) -> tuple[str, ...]:
        """Sensor names in node order."""
        return tuple(s.name for s in self.sensors)

    @property
    def fault_names(self) -> tuple[str, ...]:
        """Fault mode names, in a fixed order."""
        return tuple(self.faults)

    @property
    def nominal_mean(self) -> FloatArray:
        """Nominal mean per sensor, shape ``(n_sensors,)``."""
        mean: FloatArray = self._nominal[0]
        return mean

    @property
    def nominal_std(self) -> FloatArray:
        """Nominal standard deviation per sensor, shape ``(n_sensors,)``."""
        std: FloatArray = self._nominal[1]
        return std

    @property
    def kind_onehot(self) -> FloatArray:
        """One-hot sensor kinds, shape ``(n_sensors, len(SENSOR_KINDS))``."""
        onehot = np.zeros((len(self.sensors), len(SENSOR_KINDS)))
        for i, s in enumerate(self.sensors):
            onehot[i, SENSOR_KINDS.index(s.kind)] = 1.0
        return onehot


def simulate_values(
    etype: EquipmentType,
    rng: np.random.Generator,
    size: int,
    *,
    drift: float = 0.0,
    fault_codes: npt.NDArray[np.int64] | None = None,
    offsets: FloatArray | None = None,
    window: int = WINDOW,
) -> FloatArray:
    """Simulate ``size`` reading windows of *etype*, shape ``(size, n_sensors, window)``.

    ``fault_codes`` holds one code per window: ``-1`` for healthy, otherwise an
    index into ``etype.fault_names``. ``offsets`` are per-sensor installation
    offsets in standard deviations (shape ``(n_sensors,)`` or ``(size, n_sensors)``).
    """
    n = len(etype.sensors)
    codes = np.full(size, -1, dtype=np.int64) if fault_codes is None else fault_codes
    load = rng.normal(0.0, _LOAD_STD, size=(size, 1))
    mean = load * etype._coupling  # (size, n)
    if offsets is not None:
        mean = mean + offsets
    noise = np.ones((size, n))
    slope = np.zeros((size, n))
    faulty = codes >= 0
    severity = rng.uniform(*_SEVERITY_RANGE, size=size)
    if faulty.any():
        table = etype._fault_tables[codes[faulty]]  # (k, 3, n)
        sev = severity[faulty, None]
        mean[faulty] += sev * table[:, 0]
        noise[faulty] *= table[:, 1] ** sev
        slope[faulty] += sev * table[:, 2]
    if drift:
        mean = mean + drift * etype._drift_direction
        noise = noise * (1.0 + 0.5 * drift)
    ramp = np.linspace(-1.0, 1.0, window)
    z = rng.standard_normal((size, n, window)) * noise[..., None] + mean[..., None]
    z += slope[..., None] * ramp
    values: FloatArray = etype.nominal_mean[:, None] + etype.nominal_std[:, None] * z
    return values


@attrs.frozen(eq=False)
class SensorReadings:
    """One window of readings of every sensor of one piece of equipment.

    ``values`` has shape ``(len(sensors), window)`` in physical units. ``fault``
    and ``drift`` record how the window was simulated (ground truth for
    evaluation); models never look at them.
    """

    equipment_id: str
    equipment_type: str
    sensors: tuple[str, ...]
    values: FloatArray
    fault: str | None = None
    drift: float = 0.0


@attrs.frozen
class Equipment:
    """One unit of the fleet: its id, type and installation offsets (in nominal standard deviations)."""

    equipment_id: str
    type: EquipmentType
    offsets: FloatArray = attrs.field(eq=False, repr=False)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _check_drift(drift: float) -> None:
    if not (math.isfinite(drift) and drift >= 0.0):
        raise ValueError(f"drift must be a finite number >= 0, got {drift!r}")


@attrs.define
class EquipmentFleet:
    """A seeded fleet of ``size`` units, spread round-robin over the equipment types."""

    size: int = attrs.field(default=50)
    seed: int = 0
    _units: dict[str, Equipment] = attrs.field(init=False, factory=dict, repr=False)

    @size.validator
    def _check_size(self, _: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"size must be an int >= 1, got {value!r}")

    def __attrs_post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        types = list(EQUIPMENT_TYPES.values())
        counters = dict.fromkeys(EQUIPMENT_TYPES, 0)
        for i in range(self.size):
            etype = types[i % len(types)]
            counters[etype.name] += 1
            equipment_id = f"{etype.prefix}-{counters[etype.name]:03d}"
            offsets = _readonly(rng.normal(0.0, _OFFSET_STD, size=len(etype.sensors)))
            self._units[equipment_id] = Equipment(equipment_id, etype, offsets)

    @property
    def ids(self) -> tuple[str, ...]:
        """Equipment ids in creation order (e.g. ``"PMP-001"``)."""
        return tuple(self._units)

    def __getitem__(self, equipment_id: str) -> Equipment:
        try:
            return self._units[equipment_id]
        except KeyError:
            raise UnknownEquipmentError(equipment_id, next(iter(self._units))) from None

    def __contains__(self, equipment_id: object) -> bool:
        return equipment_id in self._units

    def __len__(self) -> int:
        return len(self._units)

    def ids_of_type(self, type_name: str) -> tuple[str, ...]:
        """The ids of every unit of equipment type *type_name*."""
        return tuple(i for i, u in self._units.items() if u.type.name == type_name)

    def simulate(
        self,
        equipment_id: str,
        rng: np.random.Generator,
        drift: float = 0.0,
        *,
        fault: str | None = None,
        fault_probability: float = 0.0,
    ) -> SensorReadings:
        """Simulate one window of readings of *equipment_id*.

        ``fault`` forces a fault mode of the unit's type; otherwise, with
        probability ``fault_probability``, a uniformly chosen fault mode is
        injected. ``drift >= 0`` shifts every sensor (see the module docstring).
        """
        return self.simulate_many(
            equipment_id, rng, 1, drift, fault=fault, fault_probability=fault_probability
        )[0]

    def simulate_many(
        self,
        equipment_id: str,
        rng: np.random.Generator,
        count: int,
        drift: float = 0.0,
        *,
        fault: str | None = None,
        fault_probability: float = 0.0,
    ) -> list[SensorReadings]:
        """Simulate *count* windows of *equipment_id* in one vectorised draw."""
        unit = self[equipment_id]
        etype = unit.type
        _check_drift(drift)
        _check_probability("fault_probability", fault_probability)
        if fault is not None:
            if fault not in etype.faults:
                raise ValueError(f"fault must be one of {etype.fault_names} for {etype.name}, got {fault!r}")
            codes = np.full(count, etype.fault_names.index(fault), dtype=np.int64)
        else:
            draws = rng.random(count)
            picks = rng.integers(0, len(etype.faults), size=count)
            codes = np.where(draws < fault_probability, picks, -1)
        values = simulate_values(etype, rng, count, drift=drift, fault_codes=codes, offsets=unit.offsets)
        names = etype.sensor_names
        return [
            SensorReadings(
                equipment_id=equipment_id,
                equipment_type=etype.name,
                sensors=names,
                values=_readonly(values[i]),
                fault=None if codes[i] < 0 else etype.fault_names[codes[i]],
                drift=float(drift),
            )
            for i in range(count)
        ]

    def sample_ids(self, rng: np.random.Generator, count: int) -> list[str]:
        """Draw *count* equipment ids uniformly at random (for simulated traffic)."""
        ids = self.ids
        return [ids[i] for i in rng.integers(0, len(ids), size=count)]


# --------------------------------------------------------------------------- the equipment types


def _s(name: str, kind: str, unit: str, mean: float, std: float, coupling: float = 0.0) -> SensorSpec:
    return SensorSpec(name, kind, unit, mean, std, coupling)


def _e(shift: float = 0.0, noise: float = 1.0, slope: float = 0.0) -> FaultEffect:
    return FaultEffect(shift, noise, slope)


def _type(
    name: str,
    prefix: str,
    sensors: Sequence[SensorSpec],
    edges: Sequence[tuple[str, str]],
    faults: Mapping[str, Mapping[str, FaultEffect]],
) -> EquipmentType:
    frozen = MappingProxyType({k: MappingProxyType(dict(v)) for k, v in faults.items()})
    return EquipmentType(name, prefix, tuple(sensors), tuple(edges), frozen)


_PUMP = _type(
    "centrifugal_pump",
    "PMP",
    [
        _s("motor_current", "current", "A", 42.0, 1.5, 0.9),
        _s("motor_speed", "speed", "rpm", 2950.0, 8.0, -0.2),
        _s("motor_bearing_temperature", "temperature", "degC", 55.0, 1.5, 0.3),
        _s("motor_vibration", "vibration", "mm/s", 1.8, 0.25, 0.2),
        _s("pump_bearing_temperature", "temperature", "degC", 60.0, 1.5, 0.3),
        _s("pump_vibration", "vibration", "mm/s", 2.2, 0.3, 0.2),
        _s("suction_pressure", "pressure", "bar", 1.2, 0.05, -0.3),
        _s("discharge_pressure", "pressure", "bar", 6.5, 0.15, 0.6),
        _s("flow", "flow", "m3/h", 120.0, 3.0, 1.0),
        _s("seal_chamber_pressure", "pressure", "bar", 2.0, 0.08, 0.3),
    ],
    [
        ("motor_current", "motor_speed"),
        ("motor_speed", "motor_vibration"),
        ("motor_vibration", "motor_bearing_temperature"),
        ("motor_vibration", "pump_vibration"),
        ("pump_vibration", "pump_bearing_temperature"),
        ("pump_vibration", "suction_pressure"),
        ("suction_pressure", "flow"),
        ("flow", "discharge_pressure"),
        ("discharge_pressure", "seal_chamber_pressure"),
        ("seal_chamber_pressure", "pump_bearing_temperature"),
        ("motor_current", "flow"),
    ],
    {
        "cavitation": {
            "suction_pressure": _e(-3.0, 2.0),
            "flow": _e(-1.5, 3.0),
            "pump_vibration": _e(3.0, 2.5),
            "discharge_pressure": _e(-2.0, 2.0),
            "motor_current": _e(0.0, 2.0),
        },
        "bearing_wear": {
            "pump_vibration": _e(3.0, 1.5, 1.0),
            "pump_bearing_temperature": _e(3.0, 1.0, 1.0),
            "motor_vibration": _e(1.0),
        },
        "seal_leak": {
            "seal_chamber_pressure": _e(-3.5, 1.5),
            "flow": _e(-1.0),
            "discharge_pressure": _e(-1.0),
        },
        "misalignment": {
            "motor_vibration": _e(3.0, 1.3),
            "pump_vibration": _e(3.0, 1.3),
            "motor_bearing_temperature": _e(2.0),
            "pump_bearing_temperature": _e(1.5),
            "motor_current": _e(1.0),
        },
    },
)

_COMPRESSOR = _type(
    "air_compressor",
    "CMP",
    [
        _s("motor_current", "current", "A", 110.0, 3.0, 0.9),
        _s("suction_pressure", "pressure", "bar", 1.0, 0.02, 0.0),
        _s("interstage_pressure", "pressure", "bar", 2.8, 0.08, 0.5),
        _s("discharge_pressure", "pressure", "bar", 8.0, 0.15, 0.6),
        _s("discharge_temperature", "temperature", "degC", 165.0, 3.0, 0.5),
        _s("intercooler_outlet_temperature", "temperature", "degC", 38.0, 1.2, 0.3),
        _s("valve_cover_temperature", "temperature", "degC", 95.0, 2.5, 0.4),
        _s("oil_pressure", "pressure", "bar", 3.5, 0.1, 0.0),
        _s("oil_temperature", "temperature", "degC", 60.0, 1.5, 0.3),
        _s("crankcase_vibration", "vibration", "mm/s", 4.0, 0.5, 0.3),
    ],
    [
        ("motor_current", "crankcase_vibration"),
        ("suction_pressure", "interstage_pressure"),
        ("interstage_pressure", "intercooler_outlet_temperature"),
        ("interstage_pressure", "discharge_pressure"),
        ("discharge_pressure", "discharge_temperature"),
        ("discharge_temperature", "valve_cover_temperature"),
        ("valve_cover_temperature", "interstage_pressure"),
        ("oil_pressure", "oil_temperature"),
        ("oil_temperature", "crankcase_vibration"),
        ("crankcase_vibration", "discharge_pressure"),
        ("motor_current", "discharge_pressure"),
    ],
    {
        "valve_failure": {
            "valve_cover_temperature": _e(3.5, 1.5),
            "discharge_temperature": _e(2.5),
            "interstage_pressure": _e(-2.0, 1.5),
            "discharge_pressure": _e(-1.5),
        },
        "intercooler_fouling": {
            "intercooler_outlet_temperature": _e(3.5, 1.0, 1.0),
            "discharge_temperature": _e(2.0),
            "interstage_pressure": _e(1.5),
        },
        "lubrication_failure": {
            "oil_pressure": _e(-3.5, 1.5),
            "oil_temperature": _e(3.0, 1.0, 1.0),
            "crankcase_vibration": _e(2.0, 1.5),
        },
        "bearing_wear": {
            "crankcase_vibration": _e(3.5, 1.5, 1.0),
            "oil_temperature": _e(1.5),
            "motor_current": _e(0.5, 1.5),
        },
    },
)

_MOTOR = _type(
    "electric_motor",
    "MTR",
    [
        _s("current_phase_a", "current", "A", 75.0, 1.5, 0.9),
        _s("current_phase_b", "current", "A", 75.0, 1.5, 0.9),
        _s("current_phase_c", "current", "A", 75.0, 1.5, 0.9),
        _s("winding_temperature", "temperature", "degC", 85.0, 2.0, 0.6),
        _s("de_bearing_temperature", "temperature", "degC", 60.0, 1.5, 0.3),
        _s("nde_bearing_temperature", "temperature", "degC", 55.0, 1.5, 0.3),
        _s("de_vibration", "vibration", "mm/s", 1.6, 0.2, 0.2),
        _s("nde_vibration", "vibration", "mm/s", 1.4, 0.2, 0.2),
        _s("speed", "speed", "rpm", 1480.0, 4.0, -0.3),
    ],
    [
        ("current_phase_a", "current_phase_b"),
        ("current_phase_b", "current_phase_c"),
        ("current_phase_c", "current_phase_a"),
        ("current_phase_a", "winding_temperature"),
        ("current_phase_b", "winding_temperature"),
        ("current_phase_c", "winding_temperature"),
        ("winding_temperature", "speed"),
        ("speed", "de_vibration"),
        ("de_vibration", "de_bearing_temperature"),
        ("de_vibration", "nde_vibration"),
        ("nde_vibration", "nde_bearing_temperature"),
    ],
    {
        "winding_overheating": {
            "winding_temperature": _e(3.5, 1.0, 1.5),
            "current_phase_a": _e(1.5),
            "current_phase_b": _e(1.5),
            "current_phase_c": _e(1.5),
        },
        "phase_imbalance": {
            "current_phase_a": _e(3.0),
            "current_phase_b": _e(-2.5),
            "winding_temperature": _e(1.5),
            "de_vibration": _e(0.5, 2.0),
        },
        "broken_rotor_bar": {
            "current_phase_a": _e(0.0, 3.0),
            "current_phase_b": _e(0.0, 3.0),
            "current_phase_c": _e(0.0, 3.0),
            "speed": _e(-2.0, 2.0),
            "de_vibration": _e(1.5, 2.0),
        },
        "bearing_wear": {
            "de_vibration": _e(3.5, 1.5, 1.0),
            "de_bearing_temperature": _e(3.0, 1.0, 1.0),
            "nde_vibration": _e(1.0),
        },
    },
)

_HEAT_EXCHANGER = _type(
    "heat_exchanger",
    "HEX",
    [
        _s("hot_inlet_temperature", "temperature", "degC", 120.0, 1.5, 0.2),
        _s("hot_outlet_temperature", "temperature", "degC", 70.0, 1.5, 0.4),
        _s("cold_inlet_temperature", "temperature", "degC", 25.0, 1.0, 0.0),
        _s("cold_outlet_temperature", "temperature", "degC", 55.0, 1.5, 0.4),
        _s("shell_pressure_drop", "pressure", "kPa", 45.0, 2.0, 0.6),
        _s("tube_pressure_drop", "pressure", "kPa", 60.0, 2.5, 0.6),
        _s("hot_flow", "flow", "m3/h", 40.0, 1.0, 1.0),
        _s("cold_flow", "flow", "m3/h", 65.0, 1.5, 0.8),
    ],
    [
        ("hot_inlet_temperature", "hot_outlet_temperature"),
        ("cold_inlet_temperature", "cold_outlet_temperature"),
        ("hot_outlet_temperature", "cold_outlet_temperature"),
        ("hot_flow", "tube_pressure_drop"),
        ("cold_flow", "shell_pressure_drop"),
        ("hot_flow", "hot_outlet_temperature"),
        ("cold_flow", "cold_outlet_temperature"),
        ("tube_pressure_drop", "hot_outlet_temperature"),
        ("shell_pressure_drop", "cold_outlet_temperature"),
    ],
    {
        "fouling": {
            "hot_outlet_temperature": _e(3.0, 1.0, 1.0),
            "cold_outlet_temperature": _e(-3.0, 1.0, -1.0),
            "tube_pressure_drop": _e(3.0),
        },
        "tube_leak": {
            "shell_pressure_drop": _e(2.5, 1.5),
            "tube_pressure_drop": _e(-2.5, 1.5),
            "cold_flow": _e(2.0),
        },
        "flow_restriction": {
            "cold_flow": _e(-3.0, 1.5),
            "cold_outlet_temperature": _e(3.0),
            "hot_outlet_temperature": _e(2.0),
            "shell_pressure_drop": _e(2.0),
        },
    },
)

_VALVE = _type(
    "control_valve",
    "VLV",
    [
        _s("valve_position", "position", "%", 55.0, 1.0, 0.8),
        _s("position_deviation", "position", "%", 0.0, 0.3, 0.0),
        _s("actuator_pressure", "pressure", "bar", 3.2, 0.05, 0.5),
        _s("supply_pressure", "pressure", "bar", 6.0, 0.08, 0.0),
        _s("upstream_pressure", "pressure", "bar", 10.0, 0.15, -0.3),
        _s("downstream_pressure", "pressure", "bar", 7.5, 0.15, 0.5),
        _s("flow", "flow", "m3/h", 80.0, 2.0, 1.0),
        _s("body_temperature", "temperature", "degC", 45.0, 1.0, 0.1),
    ],
    [
        ("valve_position", "position_deviation"),
        ("valve_position", "actuator_pressure"),
        ("actuator_pressure", "supply_pressure"),
        ("valve_position", "flow"),
        ("upstream_pressure", "flow"),
        ("flow", "downstream_pressure"),
        ("downstream_pressure", "body_temperature"),
        ("upstream_pressure", "body_temperature"),
    ],
    {
        "stiction": {
            "position_deviation": _e(1.0, 4.0),
            "flow": _e(0.0, 3.0),
            "actuator_pressure": _e(0.5, 2.0),
            "valve_position": _e(0.0, 2.0),
        },
        "actuator_leak": {
            "supply_pressure": _e(-3.0, 1.0, -1.0),
            "actuator_pressure": _e(-3.0, 1.5),
            "position_deviation": _e(2.5),
        },
        "seat_leak": {
            "flow": _e(2.5),
            "downstream_pressure": _e(2.0),
            "body_temperature": _e(1.5, 1.5),
            "valve_position": _e(-1.0),
        },
    },
)

_FAN = _type(
    "cooling_fan",
    "FAN",
    [
        _s("motor_current", "current", "A", 18.0, 0.6, 0.9),
        _s("fan_speed", "speed", "rpm", 980.0, 5.0, 0.3),
        _s("fan_vibration", "vibration", "mm/s", 2.5, 0.35, 0.2),
        _s("motor_vibration", "vibration", "mm/s", 1.5, 0.2, 0.2),
        _s("fan_bearing_temperature", "temperature", "degC", 50.0, 1.5, 0.3),
        _s("motor_temperature", "temperature", "degC", 70.0, 2.0, 0.5),
        _s("airflow", "flow", "m3/s", 12.0, 0.3, 0.8),
    ],
    [
        ("motor_current", "motor_temperature"),
        ("motor_current", "fan_speed"),
        ("fan_speed", "airflow"),
        ("fan_speed", "fan_vibration"),
        ("fan_vibration", "motor_vibration"),
        ("fan_vibration", "fan_bearing_temperature"),
        ("motor_vibration", "motor_temperature"),
    ],
    {
        "imbalance": {
            "fan_vibration": _e(4.0, 1.3),
            "motor_vibration": _e(2.0),
            "fan_bearing_temperature": _e(1.0),
        },
        "belt_slip": {
            "fan_speed": _e(-3.0, 2.0),
            "airflow": _e(-3.0),
            "motor_current": _e(-2.0),
        },
        "bearing_wear": {
            "fan_vibration": _e(2.5, 1.5, 1.0),
            "fan_bearing_temperature": _e(3.5, 1.0, 1.0),
        },
        "blade_fouling": {
            "airflow": _e(-2.5),
            "motor_current": _e(2.0),
            "fan_vibration": _e(1.5),
            "motor_temperature": _e(1.5),
        },
    },
)

#: Every equipment type by name (read-only).
EQUIPMENT_TYPES: Final[Mapping[str, EquipmentType]] = MappingProxyType(
    {t.name: t for t in (_PUMP, _COMPRESSOR, _MOTOR, _HEAT_EXCHANGER, _VALVE, _FAN)}
)
