"""Ray Serve's batching example, written as Ray Serve code with only the import changed.

``__call__`` awaits an ``@serve.batch`` method: single calls from concurrent requests
are gathered into lists (``BatchAdder``); ``@serve.batch`` also works bare
(``BareDoubler``). Each records the batch sizes it saw.
"""

import numpy as np
from starlette.requests import Request

import graphserve as serve


@serve.deployment(route_prefix="/adder")
class BatchAdder:
    def __init__(self):
        self.batch_sizes = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.5)
    async def handle_batch(self, numbers: list[int]):
        input_array = np.array(numbers)
        self.batch_sizes.append(input_array.shape[0])
        output_array = input_array + 1
        return output_array.astype(int).tolist()

    async def __call__(self, request: Request):
        return await self.handle_batch(int(request.query_params["number"]))

    def sizes(self):
        return self.batch_sizes


@serve.deployment
class BareDoubler:
    def __init__(self):
        self.batch_sizes = []

    @serve.batch
    async def handle_batch(self, items):
        self.batch_sizes.append(len(items))
        return [2 * item for item in items]

    async def __call__(self, request):
        return await self.handle_batch((await request.json())["x"])

    def sizes(self):
        return self.batch_sizes


app = BatchAdder.bind()
bare_app = BareDoubler.bind()
