import { act, cleanup, fireEvent, render, screen } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { Client, Provider, makeResult, type Exchange } from "urql";
import { filter, map, pipe } from "wonka";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { PlayerProvider } from "../player/Player";
import { SongList, type SongRow } from "./SongList";

const song = (id: string, title: string): SongRow => ({
  id,
  title,
  durationMs: 125_000,
  artist: { id: "ar", name: "The Band" },
  album: { id: "al", title: "The Album" },
  thumb: `https://node/art/${id}?size=64`,
  cover: `https://node/art/${id}?size=300`,
  starred: false,
});

afterEach(cleanup);

// jsdom has no media playback.
beforeAll(() => {
  Object.defineProperty(HTMLMediaElement.prototype, "play", { configurable: true, value: () => Promise.resolve() });
  Object.defineProperty(HTMLMediaElement.prototype, "pause", { configurable: true, value: () => {} });
});

// A fake GraphQL server (unit tests only): every song streams from a URL
// named after it, and each request counts.
function fakeClient() {
  const executeQuery = vi.fn();
  const exchange: Exchange = () => (ops$) =>
    pipe(
      ops$,
      filter((op) => op.kind === "query"),
      map((op) => {
        executeQuery(op.variables);
        const id = (op.variables as { id: string }).id;
        return makeResult(op, {
          data: { song: { __typename: "Song", id, streamUrl: `https://node/stream/${id}` } },
        });
      }),
    );
  return { client: new Client({ url: "/graphql", exchanges: [exchange] }), executeQuery };
}

describe("covers", () => {
  it("shows each song's cover in its row and the playing one's in the player bar", async () => {
    const { client } = fakeClient();
    const bare = { ...song("s2", "Bare"), thumb: null, cover: null };
    render(
      <Provider value={client}>
        <MemoryRouter>
          <PlayerProvider>
            <SongList songs={[song("s1", "Covered"), bare]} />
          </PlayerProvider>
        </MemoryRouter>
      </Provider>,
    );
    const rows = screen.getAllByTestId("row-cover");
    expect(rows).toHaveLength(1);
    expect(rows[0].getAttribute("src")).toBe("https://node/art/s1?size=64");
    expect(rows[0].getAttribute("alt")).toBe("");
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Play Covered" }));
    });
    expect(screen.getByTestId("player-cover").getAttribute("src")).toBe("https://node/art/s1?size=300");
    // A picture that fails to load leaves a plain tile, not a broken image.
    await act(async () => {
      fireEvent.error(rows[0]);
    });
    expect(screen.queryAllByTestId("row-cover")).toHaveLength(0);
  });
});

describe("SongList in the player", () => {
  it("plays the clicked song, with the rest of the list queued", async () => {
    const { client, executeQuery } = fakeClient();
    render(
      <Provider value={client}>
        <MemoryRouter>
          <PlayerProvider>
            <SongList songs={[song("s1", "First"), song("s2", "Second")]} />
          </PlayerProvider>
        </MemoryRouter>
      </Provider>,
    );
    expect(screen.getAllByTestId("song-row")).toHaveLength(2);
    expect(screen.getAllByText("2:05")).toHaveLength(2);
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Play Second" }));
    });
    expect(screen.getByTestId("now-playing").textContent).toBe("Second");
    expect(executeQuery).toHaveBeenCalled();
    const audio = screen.getByTestId("audio") as HTMLAudioElement;
    expect(audio.src).toBe("https://node/stream/s2");
    // "Previous" goes back to the first song of the list.
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Previous" }));
    });
    expect(screen.getByTestId("now-playing").textContent).toBe("First");
    expect(audio.src).toBe("https://node/stream/s1");
  });

  it("asks for a fresh URL when the stream fails, and resumes", async () => {
    const { client, executeQuery } = fakeClient();
    render(
      <Provider value={client}>
        <MemoryRouter>
          <PlayerProvider>
            <SongList songs={[song("s1", "Only")]} />
          </PlayerProvider>
        </MemoryRouter>
      </Provider>,
    );
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Play Only" }));
    });
    const calls = executeQuery.mock.calls.length;
    await act(async () => {
      fireEvent.error(screen.getByTestId("audio"));
    });
    expect(executeQuery.mock.calls.length).toBeGreaterThan(calls);
  });

  it("shows the queue, jumps in it and removes from it", async () => {
    const { client } = fakeClient();
    render(
      <Provider value={client}>
        <MemoryRouter>
          <PlayerProvider>
            <SongList songs={[song("s1", "First"), song("s2", "Second"), song("s3", "Third")]} />
          </PlayerProvider>
        </MemoryRouter>
      </Provider>,
    );
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Add First to the queue" }));
      fireEvent.click(screen.getByRole("button", { name: "Add Third to the queue" }));
    });
    fireEvent.click(screen.getByRole("button", { name: "Queue" }));
    expect(screen.getAllByTestId("queue-item").map((li) => li.textContent)).toEqual([
      "First — The Band",
      "Third — The Band",
    ]);
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Play Third from the queue" }));
    });
    expect(screen.getByTestId("now-playing").textContent).toBe("Third");
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Remove First from the queue" }));
    });
    expect(screen.getAllByTestId("queue-item")).toHaveLength(1);
    expect(screen.getByTestId("now-playing").textContent).toBe("Third");
  });
});
