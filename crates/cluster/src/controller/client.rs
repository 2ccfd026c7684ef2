//! What every broker asks of the active controller (metadata writes, ISR changes, the
//! controlled shutdown), following it through elections, and waiting until the answer is
//! applied here.

use super::*;

impl ClusterNode {
    /// Commits `records` through the active controller and waits until they are applied
    /// here too, so the caller reads its own write.
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<(), ControlError> {
        let index = self.call_leader(ControlRequest::Write(records)).await?;
        self.await_applied(index).await
    }

    /// Asks the active controller to change a partition's in-sync replicas.
    pub async fn alter_isr(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), ControlError> {
        let index = self
            .call_leader(ControlRequest::AlterIsr {
                node_id: self.node_id,
                topic_id,
                partition,
                leader_epoch,
                isr,
            })
            .await?;
        self.await_applied(index).await
    }

    /// Moves this broker's leaderships to other in-sync replicas before it stops.
    /// Retries while no controller answers (one may be being elected: the previous one
    /// may have just stopped); the caller bounds the wait. Gives up at once when most
    /// controllers have stopped (the last brokers of a cluster stopped whole): no
    /// controller can be elected to answer, and none would have a broker to move the
    /// leaderships to.
    pub async fn controlled_shutdown(&self) -> Result<(), ControlError> {
        tokio::select! {
            done = self.ask_controlled_shutdown() => done,
            () = self.quorum_stopped() => Err(ControlError::Unavailable(
                "most controllers have stopped (their metadata-log ports refuse connections), so no controller can move this broker's leaderships".into(),
            )),
        }
    }

    /// Returns once a majority of the voters (this node counted as running) refuse
    /// connections: their processes are gone, and no quorum can commit anything (a
    /// leader left alone does not know it has lost its quorum). A paused or cut-off voter
    /// does not refuse, so it counts as running.
    async fn quorum_stopped(&self) {
        let majority = self.voters.len() / 2 + 1;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut knocks = Vec::new();
            for (&id, addr) in &self.voters {
                if id == self.node_id as NodeId {
                    continue;
                }
                let addr = self.address_of(id).unwrap_or_else(|| addr.clone());
                knocks.push(async move { refuses_connections(&addr).await });
            }
            let mut refused = 0;
            for knock in knocks {
                refused += usize::from(knock.await);
            }
            if self.voters.len() - refused < majority {
                return;
            }
        }
    }

    async fn ask_controlled_shutdown(&self) -> Result<(), ControlError> {
        loop {
            let asked = self
                .call_leader(ControlRequest::ControlledShutdown {
                    node_id: self.node_id,
                    incarnation: self.incarnation,
                })
                .await;
            match asked {
                Ok(index) => return self.await_applied(index).await,
                Err(ControlError::Unavailable(e)) => {
                    tracing::debug!(error = %e, "controlled shutdown: no controller yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn await_applied(&self, index: u64) -> Result<(), ControlError> {
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "own write applied")
            .await
            .map(|_| ())
            .map_err(|e| {
                ControlError::Unavailable(format!("waiting for the write to apply here: {e}"))
            })
    }

    /// Sends `request` to the active controller, following redirects; tries every voter
    /// before giving up.
    pub(super) async fn call_leader(&self, request: ControlRequest) -> Result<u64, ControlError> {
        let voters: Vec<NodeId> = self.voters.keys().copied().collect();
        // A paused controller accepts connections and never answers: a heartbeat waits
        // for it a third of a session at most, then tries the others, so that a new
        // controller hears from every live broker well within the session.
        let answer_within = match request {
            ControlRequest::Heartbeat(_) => {
                Duration::from_millis((self.settings.session_timeout_ms / 3).clamp(200, 15_000))
            }
            _ => Duration::from_secs(15),
        };
        let mut target = self.leader();
        let mut last = String::from("no controller known yet");
        // A heartbeat goes round the voters a few times; any other request (a metadata
        // change) waits up to its answer time for a controller, through an election.
        let until = tokio::time::Instant::now()
            + match request {
                ControlRequest::Heartbeat(_) => Duration::ZERO,
                _ => answer_within,
            };
        let tries = voters.len() * 3 + 2;
        for attempt in 0.. {
            if attempt >= tries && tokio::time::Instant::now() >= until {
                break;
            }
            let id = match target.take() {
                Some(id) => id,
                None => voters[attempt % voters.len()],
            };
            let result = if id == self.node_id as NodeId {
                // Bounded as a remote call is: this node's own duties may hold `decide`
                // while they wait for a quorum that is gone.
                tokio::time::timeout(answer_within, self.handle(request.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ControlError::Unavailable(
                            "this node did not answer in time".into(),
                        ))
                    })
            } else {
                match self.address_of(id) {
                    Some(addr) => {
                        rpc(self.transport.as_ref(), &addr, &request, answer_within).await
                    }
                    None => Err(ControlError::Unavailable(format!(
                        "no address for node {id}"
                    ))),
                }
            };
            match result {
                Err(ControlError::NotLeader { leader }) => {
                    last = format!("node {id} is not the active controller");
                    target = leader.filter(|&l| l != id);
                    if target.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(ControlError::Unavailable(e)) => {
                    last = format!("node {id}: {e}");
                    // The metadata quorum may have elected another controller meanwhile
                    // (this one crashed): ask it next rather than the next in turn.
                    target = self.leader().filter(|&l| l != id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
        Err(ControlError::Unavailable(last))
    }
}

/// One request to the controller at `addr`, answered within `answer_within`.
async fn rpc(
    transport: &dyn raft_net::Transport,
    addr: &str,
    request: &ControlRequest,
    answer_within: Duration,
) -> Result<u64, ControlError> {
    let unavailable = |e: std::io::Error| ControlError::Unavailable(format!("{addr}: {e}"));
    // A controller that crashed with its machine never answers a connection either: the
    // whole call, connecting included, is bounded by `answer_within`.
    let mut stream = transport
        .connect(addr, answer_within.min(Duration::from_secs(2)))
        .await
        .map_err(unavailable)?;
    let exchange = async {
        raft_net::write_frame(&mut stream, &Request::Control(request.clone())).await?;
        raft_net::read_frame::<Response>(&mut stream).await
    };
    match tokio::time::timeout(answer_within, exchange).await {
        Ok(Ok(Response::Control(r))) => r,
        Ok(Ok(_)) => Err(ControlError::Unavailable(format!(
            "{addr} answered another RPC"
        ))),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable(std::io::ErrorKind::TimedOut.into())),
    }
}
