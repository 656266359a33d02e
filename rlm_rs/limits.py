"""The bounds every layer enforces on what callers and steps send, in one place.

The gateway's request models (so gateway/openapi.json advertises exactly
these), the control plane's validation and the sandbox's tool API all import
them; none of them may keep a copy of a number defined here. Standard library
only (no grpc, no pydantic): code the sandbox zygote loads imports it.

Each name carries its unit (`_CHARS`, `_SECONDS`, `_MINUTES`, a count). The
values, and why a production service picks them:

Requests
- MAX_QUESTION_CHARS 20,000: a question travels in the root prompt of every
  turn; 20,000 characters (about 5,000 tokens) leaves the context window to the
  corpus summary and the history. Long material belongs in the corpus.
- MAX_CODE_CHARS 100,000: a step's code (a ```repl fence included). The root
  model writes at most a few thousand tokens a turn; the sandbox's default
  policy (rlm_rs/sandbox/policy.py) uses the same number, so a step the
  control plane accepts is never refused by the sandbox for its length.
- MAX_DOCS_PER_SESSION 100: creating a session checks every raw object
  (one storage HEAD each) inside the request, and every step receives the
  whole document manifest. Larger corpora are concatenated or split into
  several sessions.
- MAX_TTL_MINUTES 10,080 (7 days), DEFAULT_TTL_MINUTES 60: sessions hold
  parsed text, state and search indexes; a week covers a working session
  without keeping tenants' data indefinitely.
- MAX_SOURCE_NAME_CHARS 512, MAX_MIME_TYPE_CHARS 255 (RFC 6838: 127 per
  type and subtype, plus parameters), MAX_S3_URI_CHARS 2,048 (an S3 key is at
  most 1,024 bytes, plus the bucket), MAX_S3_VERSION_CHARS 1,024 (version id
  and ETag).
- MAX_MODEL_NAME_CHARS 200: root_model, sub_model and a tool request's
  model_hint; long enough for a Bedrock inference-profile ARN.
- MAX_ID_CHARS 128: session, execution and document ids (ours are about 30).

Waiting
- MAX_SYNCHRONOUS_TIMEOUT_SECONDS 300 (DEFAULT 60) and MAX_WAIT_TIMEOUT_SECONDS
  300 (DEFAULT 30): a synchronous start or a wait holds a control-plane
  thread from the long-call reserve (rlm_rs/control/admission.py) and an HTTP
  connection; past five minutes a caller polls GET or watches the event
  stream instead. The gateway's own deadline is the timeout plus a margin.

Pages and reads
- MAX_STEPS_PAGE_SIZE 1,000 and MAX_PAGE_TOKEN_CHARS 9 (a turn index);
  MAX_SESSIONS_PAGE_SIZE 200 (DEFAULT 50), for the executions listing too;
  MAX_LISTING_TOKEN_CHARS 512 (an opaque listing cursor).
- MAX_SPAN_CHARS 1,000,000: the most text GetSpan or VerifyCitation returns
  in one answer (about 4 MB of UTF-8, well inside one gRPC message).
- EVENT_ID_PATTERN: an execution event id, `<turn:06d>.<seq:04d>`.

Tool requests (a step's tool API and a Runtime caller's ResolveTools alike)
- MAX_TOOL_KEY_CHARS 128: keys are names in state._tool_results, shown in
  every later prompt.
- MAX_SEARCH_QUERY_CHARS 2,000, MAX_SEARCH_K 100 hits.
- MAX_SUBCALL_MAX_TOKENS 32,768: the largest completion current models return.
- MAX_TEMPERATURE 2.0: the OpenAI-compatible range is 0..2.
- MAX_BATCH_PROMPTS 100: one queue_llm_batch; each prompt still counts as a
  sub-call against max_llm_subcalls.
- MAX_RLM_PIECES 1,000: doc_indices or spans of one queue_rlm.
- MAX_SPAN_TAG_CHARS 200: a span's tag (`context:<suffix>` included).
- MAX_TOOL_REQUESTS_PER_RESOLVE 500: requests (keys) in one ResolveTools call.
- MAX_TOOL_REQUESTS_PER_STEP 1,000: the ceiling of max_tool_requests_per_step
  (a batch's prompts count one each): ten full batches per step, so a
  5,000-record fan-out takes five steps; the queued prompts travel back in
  one StepResult (at most 64 MiB), which bounds what one step may queue.

Budgets
- BUDGET_CEILINGS: the largest value an execution may request for each
  budget (rlm_rs/domain/budgets.py holds the defaults and what zero means). A ceiling protects
  the service, not the tenant's bill: max_cost_usd is the tenant's own cap.

Wire
- INT32_MAX and JSON_SAFE_INT_MAX (2**53 - 1: exact in every JSON client)
  bound integers that have no policy bound of their own.
"""

from types import MappingProxyType
from typing import Final

INT32_MAX: Final = 2**31 - 1
JSON_SAFE_INT_MAX: Final = 2**53 - 1

# requests
MAX_QUESTION_CHARS: Final = 20_000
MAX_CODE_CHARS: Final = 100_000
MAX_DOCS_PER_SESSION: Final = 100
MAX_TTL_MINUTES: Final = 7 * 24 * 60
DEFAULT_TTL_MINUTES: Final = 60
MAX_SOURCE_NAME_CHARS: Final = 512
MAX_MIME_TYPE_CHARS: Final = 255
MAX_S3_URI_CHARS: Final = 2_048
MAX_S3_VERSION_CHARS: Final = 1_024
MAX_MODEL_NAME_CHARS: Final = 200
MAX_ID_CHARS: Final = 128

# waiting
MAX_SYNCHRONOUS_TIMEOUT_SECONDS: Final = 300.0
DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS: Final = 60.0
MAX_WAIT_TIMEOUT_SECONDS: Final = 300.0
DEFAULT_WAIT_TIMEOUT_SECONDS: Final = 30.0

# pages and reads
MAX_STEPS_PAGE_SIZE: Final = 1_000
MAX_PAGE_TOKEN_CHARS: Final = 9
MAX_SESSIONS_PAGE_SIZE: Final = 200
DEFAULT_SESSIONS_PAGE_SIZE: Final = 50
MAX_LISTING_TOKEN_CHARS: Final = 512
MAX_SPAN_CHARS: Final = 1_000_000
EVENT_ID_PATTERN: Final = r"\d{6}\.\d{4}"  # unanchored

# tool requests
MAX_TOOL_KEY_CHARS: Final = 128
MAX_SEARCH_QUERY_CHARS: Final = 2_000
MAX_SEARCH_K: Final = 100
MAX_SUBCALL_MAX_TOKENS: Final = 32_768
MAX_TEMPERATURE: Final = 2.0
MAX_BATCH_PROMPTS: Final = 100
MAX_RLM_PIECES: Final = 1_000
MAX_SPAN_TAG_CHARS: Final = 200
MAX_TOOL_REQUESTS_PER_RESOLVE: Final = 500
MAX_TOOL_REQUESTS_PER_STEP: Final = 1_000

# budgets: the largest value an execution may ask for
BUDGET_CEILINGS: Final = MappingProxyType(
    {
        "max_turns": 200,
        "max_total_seconds": 3600,
        "max_step_seconds": 300,
        "max_spans_total": 100_000,
        "max_spans_per_step": 10_000,
        "max_tool_requests_per_step": MAX_TOOL_REQUESTS_PER_STEP,
        "max_llm_subcalls": 10_000,
        "max_llm_prompt_chars": 2_000_000,
        "max_total_llm_prompt_chars": 100_000_000,
        "max_stdout_chars": 1_000_000,
        "max_state_chars": 20_000_000,
        "max_rlm_subcalls": 100,
        "max_depth": 5,
        "max_cost_usd": 10_000,
    }
)
