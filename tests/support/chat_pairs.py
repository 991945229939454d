"""Chat pairs the training tests tokenize: data rows, then rows that stand for replayed answers."""


def data_and_replayed(n_data: int = 4, n_replayed: int = 6) -> list[list[dict]]:
    """``n_data`` short chat pairs, then ``n_replayed`` that stand for replayed answers."""
    convs = [[{"role": "user", "content": f"Data question {i}?"},
              {"role": "assistant", "content": f"Data answer {i}."}] for i in range(n_data)]
    return convs + [[{"role": "user", "content": f"Replayed question {j}?"},
                     {"role": "assistant", "content": f"Replayed answer {j}."}] for j in range(n_replayed)]
