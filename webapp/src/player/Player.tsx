// The persistent player bar: one <audio> element driven by the queue.
//
// Resilience: stream URLs point at one storage node. When that node fails
// mid-song the element reports an error (or stalls); the player asks the
// gateway for a fresh URL (another replica) and resumes at the same
// position, without the listener doing anything.

import { Cover } from "../components/Cover";
import { Icon } from "../components/Icon";
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useReducer,
  useRef,
  useState,
  type ReactNode,
} from "react";
import { useClient } from "urql";
import { graphql } from "../gql";
import { useSession } from "../session";
import {
  RESTART_AFTER_SECONDS,
  currentTrack,
  emptyQueue,
  formatTime,
  queueReducer,
  type QueueAction,
  type QueueState,
  type Track,
} from "./queue";

const RecordPlay = graphql(`
  mutation RecordPlay($id: ID!) {
    recordPlay(songId: $id) {
      id
      playCount
      lastPlayedAt
    }
  }
`);

/** A song counts as played once heard for half its length or four minutes
 * (the rule scrobblers use), once per time it is queued up. */
export function playThreshold(durationSeconds: number): number {
  return Math.min(Math.max(durationSeconds, 1) / 2, 240);
}

const StreamUrl = graphql(`
  query StreamUrl($id: ID!) {
    song(id: $id) {
      id
      streamUrl
    }
  }
`);

interface PlayerValue {
  queue: QueueState;
  dispatch: (a: QueueAction) => void;
  playing: boolean;
}

const PlayerContext = createContext<PlayerValue>({
  queue: emptyQueue,
  dispatch: () => {},
  playing: false,
});

export function usePlayer(): PlayerValue {
  return useContext(PlayerContext);
}

/** Starts playback; browsers refuse autoplay until a gesture (ignored). */
async function safePlay(el: HTMLMediaElement): Promise<void> {
  try {
    await el.play();
  } catch {
    // Autoplay refused or the source failed: `onError` handles the latter.
  }
}

/** How long a stall may last before the player fetches a fresh URL. */
const STALL_MS = 4000;

export function PlayerProvider({ children }: { children: ReactNode }) {
  const [queue, dispatch] = useReducer(queueReducer, emptyQueue);
  const [playing, setPlaying] = useState(false);
  const value = useMemo(() => ({ queue, dispatch, playing }), [queue, playing]);
  return (
    <PlayerContext.Provider value={value}>
      {children}
      <PlayerBar queue={queue} dispatch={dispatch} onPlaying={setPlaying} />
    </PlayerContext.Provider>
  );
}

function PlayerBar({
  queue,
  dispatch,
  onPlaying,
}: {
  queue: QueueState;
  dispatch: (a: QueueAction) => void;
  onPlaying: (p: boolean) => void;
}) {
  const client = useClient();
  const audio = useRef<HTMLAudioElement>(null);
  const track = currentTrack(queue);
  const [time, setTime] = useState(0);
  const [duration, setDuration] = useState(0);
  const [paused, setPaused] = useState(true);
  const [volume, setVolume] = useState(() => Number(localStorage.getItem("rondo.volume") ?? "1"));
  const [dragging, setDragging] = useState<number | null>(null);
  const [status, setStatus] = useState("");
  const recovering = useRef(false);
  const stallTimer = useRef<number | undefined>(undefined);
  const { user } = useSession();
  // Seconds heard of the current queue entry (seeks do not count), and
  // whether its play was recorded.
  const heard = useRef({ key: "", seconds: 0, last: 0, recorded: false });
  const countHeard = (now: number, rate: number) => {
    const key = `${queue.index}:${track?.id ?? ""}`;
    const h = heard.current;
    if (h.key !== key) heard.current = { key, seconds: 0, last: now, recorded: false };
    const step = now - heard.current.last;
    heard.current.last = now;
    // Timeupdates come about every quarter second: a longer step is a seek.
    if (step > 0 && step < 2 * Math.max(rate, 1)) heard.current.seconds += step;
    if (!heard.current.recorded && track && user && heard.current.seconds >= playThreshold(track.durationMs / 1000)) {
      heard.current.recorded = true;
      void client.mutation(RecordPlay, { id: track.id }).toPromise();
    }
  };

  // Loads a fresh stream URL for `t` and starts at `at` seconds.
  const load = useCallback(
    async (t: Track, at: number, autoplay: boolean) => {
      const el = audio.current;
      if (!el) return;
      const r = await client.query(StreamUrl, { id: t.id }, { requestPolicy: "network-only" }).toPromise();
      const url = r.data?.song?.streamUrl;
      if (!url) {
        setStatus(r.error ? `Cannot reach the server: ${r.error.message}` : "No storage node holds this song now");
        return false;
      }
      el.src = url;
      el.dataset.songId = t.id;
      if (at > 0) {
        el.addEventListener(
          "loadedmetadata",
          () => {
            el.currentTime = at;
          },
          { once: true },
        );
      }
      if (autoplay) await safePlay(el);
      return true;
    },
    [client],
  );

  // A new current track: load and play it.
  useEffect(() => {
    if (!track) {
      audio.current?.removeAttribute("src");
      return;
    }
    setStatus("");
    setTime(0);
    setDuration(track.durationMs / 1000);
    void load(track, 0, true);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [track?.id, queue.index]);

  const recover = useCallback(async () => {
    const el = audio.current;
    if (!el || !track || recovering.current) return;
    recovering.current = true;
    const at = el.currentTime;
    setStatus("Reconnecting…");
    try {
      for (let attempt = 0; attempt < 15; attempt++) {
        const before = el.src;
        if ((await load(track, at, true)) && el.src !== before) {
          setStatus("");
          return;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
      setStatus("Playback failed: no replica of this song answers");
    } finally {
      recovering.current = false;
    }
  }, [load, track]);

  useEffect(() => {
    const el = audio.current;
    if (!el) return;
    el.volume = volume;
    localStorage.setItem("rondo.volume", String(volume));
  }, [volume]);

  const toggle = useCallback(() => {
    const el = audio.current;
    if (!el || !track) return;
    if (el.paused) void safePlay(el);
    else el.pause();
  }, [track]);

  const seek = useCallback((to: number) => {
    const el = audio.current;
    if (!el || !Number.isFinite(to)) return;
    el.currentTime = Math.max(0, Math.min(to, el.duration || to));
    setTime(el.currentTime);
  }, []);

  const previous = useCallback(() => {
    const el = audio.current;
    if (el && el.currentTime > RESTART_AFTER_SECONDS) seek(0);
    else dispatch({ type: "previous" });
  }, [dispatch, seek]);

  const next = useCallback(() => dispatch({ type: "next" }), [dispatch]);

  // Keyboard shortcuts, unless typing in a field.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      if (target && (target.closest("input, textarea, select, [contenteditable]") || e.ctrlKey || e.metaKey || e.altKey)) {
        return;
      }
      const el = audio.current;
      if (e.key === " " && !target?.closest("button, a")) {
        e.preventDefault();
        toggle();
      } else if (e.key === "ArrowRight" && el) {
        e.preventDefault();
        if (e.shiftKey) next();
        else seek(el.currentTime + 5);
      } else if (e.key === "ArrowLeft" && el) {
        e.preventDefault();
        if (e.shiftKey) previous();
        else seek(el.currentTime - 5);
      } else if (e.key === "ArrowUp") {
        e.preventDefault();
        setVolume((v) => Math.min(1, Math.round((v + 0.1) * 10) / 10));
      } else if (e.key === "ArrowDown") {
        e.preventDefault();
        setVolume((v) => Math.max(0, Math.round((v - 0.1) * 10) / 10));
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [toggle, seek, next, previous]);

  // The Media Session API: OS media keys and lock-screen controls.
  useEffect(() => {
    if (!("mediaSession" in navigator) || !track) return;
    const ms = navigator.mediaSession;
    if (typeof MediaMetadata !== "undefined") {
      ms.metadata = new MediaMetadata({
        title: track.title,
        artist: track.artist,
        album: track.album ?? "",
        // The size is the longer side: the picture need not be square.
        artwork: track.cover ? [{ src: track.cover, type: "image/jpeg" }] : [],
      });
    }
    const handlers: [MediaSessionAction, MediaSessionActionHandler][] = [
      ["play", () => audio.current && void safePlay(audio.current)],
      ["pause", () => audio.current?.pause()],
      ["previoustrack", previous],
      ["nexttrack", next],
      ["seekto", (d) => d.seekTime !== undefined && seek(d.seekTime)],
    ];
    for (const [action, handler] of handlers) {
      try {
        ms.setActionHandler(action, handler);
      } catch {
        // Not supported by this browser.
      }
    }
  }, [track, next, previous, seek]);

  const shown = dragging ?? time;
  const [showQueue, setShowQueue] = useState(false);
  return (
    <footer className="player" aria-label="Player">
      {showQueue && (
        <section className="queue" aria-label="Queue">
          <h2>Queue</h2>
          {queue.tracks.length === 0 && <p className="sub">The queue is empty.</p>}
          <ol>
            {queue.tracks.map((t, i) => (
              <li key={`${t.id}-${i}`} className={i === queue.index ? "current" : undefined} data-testid="queue-item">
                <button type="button" className="link" aria-label={`Play ${t.title} from the queue`} onClick={() => dispatch({ type: "jump", index: i })}>
                  {t.title} <span className="sub">— {t.artist}</span>
                </button>
                <button type="button" aria-label={`Remove ${t.title} from the queue`} onClick={() => dispatch({ type: "remove", index: i })}>
                  <Icon name="remove" />
                </button>
              </li>
            ))}
          </ol>
          {queue.tracks.length > 0 && (
            <button type="button" onClick={() => dispatch({ type: "clear" })}>
              Clear
            </button>
          )}
        </section>
      )}
      <audio
        ref={audio}
        data-testid="audio"
        preload="auto"
        onTimeUpdate={(e) => {
          setTime(e.currentTarget.currentTime);
          countHeard(e.currentTarget.currentTime, e.currentTarget.playbackRate);
          window.clearTimeout(stallTimer.current);
        }}
        onDurationChange={(e) => Number.isFinite(e.currentTarget.duration) && setDuration(e.currentTarget.duration)}
        onPlay={() => {
          setPaused(false);
          onPlaying(true);
        }}
        onPause={() => {
          setPaused(true);
          onPlaying(false);
        }}
        onEnded={() => {
          if (queue.index + 1 < queue.tracks.length) next();
        }}
        onError={() => void recover()}
        onStalled={() => {
          window.clearTimeout(stallTimer.current);
          stallTimer.current = window.setTimeout(() => void recover(), STALL_MS);
        }}
        onWaiting={() => {
          window.clearTimeout(stallTimer.current);
          stallTimer.current = window.setTimeout(() => void recover(), STALL_MS);
        }}
      />
      <div className="now">
        {track ? (
          <>
            <Cover src={track.cover ?? track.thumb} size={56} testId="player-cover" key={track.id} />
            <div className="now-text">
              <div className="title" data-testid="now-playing">
                {track.title}
              </div>
              <div className="sub">{track.artist}</div>
            </div>
          </>
        ) : (
          <div className="sub">Nothing playing</div>
        )}
        {status && (
          <div className="status" role="status">
            {status}
          </div>
        )}
      </div>
      <div className="controls">
        <div className="buttons">
          <button type="button" aria-label="Previous" onClick={previous} disabled={!track}>
            <Icon name="previous" />
          </button>
          <button type="button" className="play" aria-label={paused ? "Play" : "Pause"} onClick={toggle} disabled={!track}>
            <Icon name={paused ? "play" : "pause"} />
          </button>
          <button type="button" aria-label="Next" onClick={next} disabled={!track || queue.index + 1 >= queue.tracks.length}>
            <Icon name="next" />
          </button>
        </div>
        <div className="seek">
          <span className="time" aria-label="Elapsed">
            {formatTime(shown)}
          </span>
          <input
            type="range"
            aria-label="Seek"
            min={0}
            max={Math.max(duration, 0.1)}
            step={0.1}
            value={Math.min(shown, duration || shown)}
            disabled={!track}
            onChange={(e) => setDragging(Number(e.target.value))}
            onPointerUp={(e) => {
              seek(Number((e.target as HTMLInputElement).value));
              setDragging(null);
            }}
            onKeyUp={(e) => {
              seek(Number((e.target as HTMLInputElement).value));
              setDragging(null);
            }}
          />
          <span className="time" aria-label="Total">
            {formatTime(duration)}
          </span>
        </div>
      </div>
      <div className="volume">
        <button type="button" aria-expanded={showQueue} aria-label="Queue" onClick={() => setShowQueue(!showQueue)}>
          <Icon name="queue" /> {queue.tracks.length}
        </button>
        <label htmlFor="volume">Volume</label>
        <input
          id="volume"
          type="range"
          min={0}
          max={1}
          step={0.05}
          value={volume}
          onChange={(e) => setVolume(Number(e.target.value))}
        />
      </div>
    </footer>
  );
}
