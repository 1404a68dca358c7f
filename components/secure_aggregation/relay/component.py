from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from fedpipe.components import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def relay_messages(
    messages: Input[List[Artifact]],
    transcript: Output[Artifact],
    previous: Optional[Input[Artifact]] = None,
):
    """Secure aggregation (server side): forward the previous transcript plus the messages
    the shards sent, as one artifact every client task can read.

    Args:
        messages: The messages every shard sent in this step.
        transcript: The transcript so far, for the next step's client tasks.
        previous: The transcript of the previous steps, if any.
    """
    from fedpipe import stages

    paths = ([previous.path] if previous is not None else []) + [m.path for m in messages]
    stages.relay_messages(paths, transcript.path)
