"""Tasks inferred from the stream (clbench.learners.arrival_tasks): the k-th class to appear is in task
k // classes-per-task, exactly as a sample-by-sample reading of the stream assigns them."""

from __future__ import annotations

import pytest
import torch

from clbench.learners.arrival_tasks import ArrivalTasks

CPU = torch.device("cpu")


def _one_sample_at_a_time(batches: list[list[int]], num_classes: int, per_task: int) -> tuple[list[int], list[int]]:
    """Reference: read the stream label by label; a new class gets task (number of classes seen) // per_task.
    Returns the final table and the current task after each batch."""
    table, current = [-1] * num_classes, []
    for batch in batches:
        for label in batch:
            if table[label] < 0:
                table[label] = sum(t >= 0 for t in table) // per_task
        current.append(max(max(table), 0))
    return table, current


@pytest.mark.parametrize("num_classes,n_experiences", [(10, 5), (7, 3), (12, 1), (6, 6)])
def test_tasks_follow_the_order_of_first_appearance_sample_by_sample(num_classes, n_experiences):
    g = torch.Generator().manual_seed(num_classes)
    for trial in range(20):
        order = torch.randperm(num_classes, generator=g)  # classes arrive in a random order, in bursts
        batches = []
        for start in range(0, num_classes, 2):
            pool = order[: start + 2]  # the classes so far, old ones repeating
            batches.append(pool[torch.randint(0, len(pool), (int(torch.randint(1, 7, (1,), generator=g)),),
                                              generator=g)].tolist())
        tasks = ArrivalTasks(num_classes, n_experiences, CPU)
        currents = [int(tasks.update(torch.tensor(b))) for b in batches]
        table, expected = _one_sample_at_a_time(batches, num_classes, tasks.per_task)
        assert tasks.table.tolist() == table and currents == expected, (trial, batches)


def test_within_a_batch_new_classes_rank_by_their_first_position():
    tasks = ArrivalTasks(num_classes=6, n_experiences=3, device=CPU)  # 2 classes per task
    assert tasks.update(torch.tensor([4, 4, 1])).item() == 0  # 4 then 1: ranks 0, 1
    current = tasks.update(torch.tensor([1, 5, 1, 0, 5]))  # 5 then 0: ranks 2, 3
    assert tasks.table.tolist() == [1, 0, -1, -1, 0, 1] and current.shape == () and current.item() == 1
    assert tasks.seen.tolist() == [True, True, False, False, True, True]


def test_the_current_task_is_zero_before_any_class():
    tasks = ArrivalTasks(num_classes=4, n_experiences=2, device=CPU)
    assert tasks.update(torch.tensor([], dtype=torch.int64)).item() == 0 and tasks.table.tolist() == [-1] * 4
