// The cluster page (admins): storage nodes with state, placement (standing,
// zone, partitions owned) and usage, what their resync workers still have
// to fetch and when they will be done, how many partitions are below R,
// the ring, the gateway replicas and who holds the floating address, where
// each song's replicas are; refreshed every two seconds.

import { useEffect } from "react";
import { useQuery } from "urql";
import { graphql } from "../gql";
import { ErrorNote } from "./Browse";

const ClusterQuery = graphql(`
  query ClusterPage {
    cluster {
      nodes {
        id
        address
        state
        songCount
        bytesStored
        ringPhase
        lastAppliedSeq
        blobsToFetch
        bytesToFetch
        resyncEtaSeconds
        copiesToGiveUp
      }
      partitionsBelowReplication
      layout {
        nodes {
          id
          zone
          capacityBytes
          standing
          partitions
        }
        placement {
          replicas
        }
      }
      ring {
        id
        members
        lastSeq
        rotationsPerSecond
      }
      gateways {
        id
        address
        vrrpState
        priority
        isMaster
        vip
        lastSeenMs
      }
    }
    recentSongs(first: 50) {
      nodes {
        id
        title
        replicas {
          id
        }
      }
    }
  }
`);

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function duration(s: number): string {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.ceil(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// 64-bit counts (`UnsignedInt64`) arrive as strings of digits.
type Member = { standing: string; capacityBytes: string; partitions?: number | null; zone: string };

// How a node stands in placement, as operators say it.
function standing(m: Member | undefined, stored: string): string {
  if (!m) return "—";
  if (m.standing === "OUT") return "out";
  if (m.standing === "OUT_AUTO") return "out (down too long)";
  if (m.capacityBytes === "0") return stored !== "0" || (m.partitions ?? 0) > 0 ? "draining" : "no capacity";
  return "in";
}

export function Cluster() {
  const [{ data, error }, refetch] = useQuery({ query: ClusterQuery, requestPolicy: "network-only" });
  useEffect(() => {
    const t = setInterval(() => refetch({ requestPolicy: "network-only" }), 2000);
    return () => clearInterval(t);
  }, [refetch]);
  const c = data?.cluster;
  const short = (id?: string | null) => (id ? id.slice(0, 8) : "?");
  return (
    <section>
      <h1>Cluster</h1>
      <ErrorNote error={error} />
      {c && (
        <>
          <h2>Storage nodes</h2>
          <table className="data" data-testid="nodes">
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">State</th>
                <th scope="col">Placement</th>
                <th scope="col">Zone</th>
                <th scope="col">Partitions</th>
                <th scope="col">Songs</th>
                <th scope="col">Stored</th>
                <th scope="col">Resync</th>
                <th scope="col">Ring phase</th>
                <th scope="col">Applied</th>
              </tr>
            </thead>
            <tbody>
              {c.nodes.map((n, i) => {
                const m = c.layout?.nodes.find((l) => l.id === n.id);
                const resync =
                  n.blobsToFetch > 0
                    ? `${n.blobsToFetch} to fetch (${bytes(Number(n.bytesToFetch))}${
                        n.resyncEtaSeconds != null ? `, ${duration(n.resyncEtaSeconds)} left` : ""
                      })`
                    : n.copiesToGiveUp > 0
                      ? `${n.copiesToGiveUp} to give up`
                      : "in sync";
                return (
                <tr key={n.id ?? i}>
                  <td title={n.address}>{short(n.id)}</td>
                  <td className={n.state === "UP" ? "ok" : "error"}>{n.state}</td>
                  <td>{standing(m, n.bytesStored)}</td>
                  <td>{m?.zone ?? "—"}</td>
                  <td>{m?.partitions ?? (c.layout && !c.layout.placement ? "all" : "—")}</td>
                  <td>{n.songCount}</td>
                  <td>{bytes(Number(n.bytesStored))}</td>
                  <td>{resync}</td>
                  <td>{n.ringPhase ?? "—"}</td>
                  <td>{n.lastAppliedSeq ?? "—"}</td>
                </tr>
                );
              })}
            </tbody>
          </table>
          <p className="sub" data-testid="below-r">
            {c.partitionsBelowReplication == null
              ? "No layout yet."
              : c.partitionsBelowReplication === 0
                ? `Every partition has its ${c.layout?.placement ? `${c.layout.placement.replicas} copies` : "copies on every node"}.`
                : `${c.partitionsBelowReplication} partitions have fewer copies than they should${
                    c.nodes.some((n) => n.state === "DOWN")
                      ? ": a node that holds them is down."
                      : "; the nodes are copying them."
                  }`}
          </p>
          <p className="sub">
            {c.ring
              ? `Ring ${c.ring.id}: ${c.ring.members.length} members, ${c.ring.lastSeq} updates, ${c.ring.rotationsPerSecond.toFixed(0)} rotations/s`
              : "No operational ring: writes are unavailable (no quorum)."}
          </p>
          <h2>Gateways</h2>
          <table className="data" data-testid="gateways">
            <thead>
              <tr>
                <th scope="col">Gateway</th>
                <th scope="col">Address</th>
                <th scope="col">VRRP</th>
                <th scope="col">Priority</th>
                <th scope="col">Floating address</th>
              </tr>
            </thead>
            <tbody>
              {c.gateways.map((g) => (
                <tr key={g.id}>
                  <td>{short(g.id)}</td>
                  <td>{g.address}</td>
                  <td>{g.vrrpState}</td>
                  <td>{g.priority}</td>
                  <td>{g.isMaster ? `holds ${g.vip ?? ""}` : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Replicas of recent songs</h2>
          <table className="data">
            <thead>
              <tr>
                <th scope="col">Song</th>
                <th scope="col">Nodes</th>
              </tr>
            </thead>
            <tbody>
              {(data?.recentSongs.nodes ?? []).map((s) => (
                <tr key={s.id}>
                  <td>{s.title}</td>
                  <td>{s.replicas.map((r) => short(r.id)).join(", ")}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
